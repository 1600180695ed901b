"""Speed of the Age groups batch mode: photos/s over a folder (and a zip) of photos, photos/s through
``datasets.Dataset.map`` with ``num_proc`` processes, and the real-time factor of video counting.

    python bench/groups.py --model models/agecheck-default [--photos 64] [--video-seconds 60] [--every 1] [--num-proc 2]

The photos are the shared fixture's 8 uncropped FG-NET photos, repeated; the video is synthetic
(OpenCV VideoWriter, 640x480 at 10 fps, one or two fixture faces per 6 s scene). Prints markdown and the
machine it ran on. Writes nothing outside a temporary folder, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from age_model.groups import GroupCounter, map_photos  # noqa: E402
from age_model.predictor import load_predictor  # noqa: E402
from age_model.resources import default_model  # noqa: E402
from bench.latency import machine_info  # noqa: E402
from tests.groups_support import Placed, Scene, write_video, zip_of  # noqa: E402

SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="model folder or Hub id (default: $AGE_MODEL, else models/agecheck-default)"
    )
    parser.add_argument(
        "--photos", type=int, default=64, help="photos in the batch (the fixture's 8 repeated; default 64)"
    )
    parser.add_argument("--video-seconds", type=float, default=60.0, help="length of the synthetic video (default 60)")
    parser.add_argument(
        "--every", type=float, default=1.0, help="seconds between the video frames read (default 1, as the app)"
    )
    parser.add_argument(
        "--num-proc", type=int, default=2, help="processes for the Dataset.map figure (default 2; 0 skips it)"
    )
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="flip TTA (default on)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and OpenCV threads (default: library defaults)"
    )
    return parser.parse_args()


def bench_video(path: Path, photos: list[Path], seconds: float, fps: float = 10.0) -> tuple[Path, int]:
    """Scenes of 6 s: one face walking for 4 s, or two side by side, then 2 s of empty shop (two
    sampled frames at 1 s: longer than the tracker waits), and so on through the photos."""
    scenes, i = [], 0
    while sum(s.seconds for s in scenes) < seconds:
        a, b = photos[i % len(photos)], photos[(i + 1) % len(photos)]
        scenes.append(
            Scene(
                4.0,
                [Placed(a, 40, 80, 320, dx=4.0)] if i % 2 == 0 else [Placed(a, 20, 100, 300), Placed(b, 340, 100, 300)],
            )
        )
        scenes.append(Scene(2.0, []))
        i += 1
    return write_video(path, scenes, fps=fps), sum(len(scene.photos) for scene in scenes)


def main() -> None:
    args = parse_args()
    sources = sorted((SHARED / "data" / "fixture" / "images").glob("fgnet_*"))
    if not sources:
        sys.exit("No fixture photos: put the shared data beside the repo (or set AGECHECK_SHARED).")
    predictor = load_predictor(args.model, threads=args.threads, tta=args.tta)
    work = Path(tempfile.mkdtemp(prefix="agecheck-bench-groups-"))
    try:
        folder = work / "photos"
        folder.mkdir()
        for i in range(args.photos):
            shutil.copy(sources[i % len(sources)], folder / f"{i:05d}-{sources[i % len(sources)].name}")
        archive = zip_of(work / "photos.zip", {p.name: p.read_bytes() for p in sorted(folder.iterdir())})
        counter = GroupCounter(predictor, every_seconds=args.every)
        counter.run(sorted(folder.iterdir())[:8])  # warm-up
        rows = ["| input | items | faces | seconds | rate |", "|---|---:|---:|---:|---:|"]
        for name, inputs in (
            ("folder of photos (one process)", [folder]),
            ("zip of the same photos (in memory)", [archive]),
        ):
            start = time.perf_counter()
            report = counter.run(inputs)
            elapsed = time.perf_counter() - start
            rate = report.photos / elapsed
            rows.append(
                f"| {name} | {report.photos} photos | {report.faces} | {elapsed:.2f} | **{rate:.1f} photos/s** |"
            )
        if args.num_proc:
            files = [(p.name, p) for p in sorted(folder.iterdir())]
            start = time.perf_counter()
            report = map_photos(files, args.model or default_model(), num_proc=args.num_proc, tta=args.tta)
            elapsed = time.perf_counter() - start
            rows.append(
                f"| folder through `Dataset.map`, num_proc={args.num_proc} (model load included) | {report.photos} "
                "photos | "
                f"{report.faces} | {elapsed:.2f} | **{report.photos / elapsed:.1f} photos/s** |"
            )
        start = time.perf_counter()
        video, expected = bench_video(work / "video.mp4", sources, args.video_seconds)
        written = time.perf_counter() - start
        start = time.perf_counter()
        report = counter.run([video])
        elapsed = time.perf_counter() - start
        rows.append(
            f"| synthetic video 640x480, 10 fps, one frame every {args.every:g} s | {report.video_seconds:.0f} s "
            "video, "
            f"{report.frames} frames | {report.faces} (of {expected} shown) | {elapsed:.2f} | "
            f"**{report.video_seconds / elapsed:.1f}x real time** |"
        )
        print(
            f"### Age groups batch mode: {args.photos} photos (the fixture's {len(sources)} repeated), "
            f"a {args.video_seconds:g} s video (written in {written:.1f} s, not timed)\n"
        )
        print("\n".join(rows))
        print()
        print(machine_info(predictor))
        print(f"command: python bench/groups.py {' '.join(sys.argv[1:])}".rstrip())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
