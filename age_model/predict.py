"""Command line: estimate the age of every face in some photos.

python -m age_model.predict --model models/agecheck-default photo.jpg group.png
python -m age_model.predict --json *.jpg > ages.jsonl
python -m age_model.predict --bands --csv faces.csv photos/ store1.zip entrance.mp4   # faces per age band
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence, TextIO

from age_model.policy import DEFAULT_THRESHOLD, THRESHOLD_RANGE, verdict
from age_model.resources import default_model

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m age_model.predict",
        description="Estimate the age of every face in the given photos: face detection (YuNet), the crop "
        "the model was trained on, then the age model. Prints a table, or JSON lines with --json.",
        epilog="Exit status: 0 if at least one photo could be read (a photo without a face counts as read), "
        "1 if every photo failed, 2 if the model could not be loaded or the options are wrong. "
        "Ages in the table are clipped to 0-100 for display; --json gives them unclipped.",
    )
    parser.add_argument(
        "photos",
        nargs="+",
        metavar="PHOTO",
        help="image files (JPEG, PNG, WebP, GIF, BMP, TIFF); with --bands also folders, zips of "
        "photos and videos (MP4, MOV, AVI, MKV, WebM)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model folder written by train.py or a Hugging Face Hub id "
        "(default: $AGE_MODEL, else the shipped agecheck-default)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per photo and line")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average each face with its mirror image (slower, a little more accurate; default on)",
    )
    parser.add_argument(
        "--face-score",
        type=float,
        default=None,
        metavar="SCORE",
        help="lowest face detection score kept, 0-1 (default 0.7; lower finds more, partly hidden faces)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="AGE",
        help=f"the ID-check age, as in the app (default {DEFAULT_THRESHOLD:g}, Challenge 25; "
        f"{THRESHOLD_RANGE[0]:g}-{THRESHOLD_RANGE[1]:g}): each face's verdict follows the app's rule, "
        "ask for ID when the estimate minus its ± is below it",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "torch"),
        default="auto",
        help="what runs the model: auto (ONNX Runtime when the folder has an up-to-date model.onnx, "
        "else torch), onnxruntime or torch",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default 32)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and OpenCV (default: the libraries' own; 1 was 10x faster "
        "than 2 on a busy 2-core machine)",
    )
    groups = parser.add_argument_group(
        "shoppers by age group (--bands)",
        "Count faces per age band over photos, folders, zips and videos: one row per face (file, or video and time; "
        "box, age, spread, band), then a count and share per band. A face whose age ± spread crosses a band edge "
        "is counted as 'uncertain', in no band. Nothing but the rows is kept. Bad inputs are reported on stderr "
        "and the rest is still counted.",
    )
    groups.add_argument("--bands", action="store_true", help="count faces per age band instead of listing photos")
    groups.add_argument(
        "--band-edges",
        default="18,25,35,45,55,65",
        metavar="EDGES",
        help="lower edges of the bands after the first, or the bands themselves "
        "(default 18,25,35,45,55,65: 0-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65+)",
    )
    groups.add_argument(
        "--csv", metavar="OUT.csv", help="write the face rows to this CSV (then stdout has the summary only)"
    )
    groups.add_argument("--summary-csv", metavar="OUT.csv", help="write the summary per band to this CSV")
    groups.add_argument(
        "--every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="videos: read one frame every SECONDS (default 1); a face in neighbouring frames counts once",
    )
    groups.add_argument(
        "--num-proc",
        type=int,
        default=1,
        metavar="N",
        help="score photo files in N processes with datasets.Dataset.map (default 1: this process)",
    )
    return parser


def load_predictor(args: argparse.Namespace):  # -> AgePredictor; imported lazily so --help is instant
    """The predictor the options ask for (``age_model.predictor.load_predictor`` raises ModelLoadError)."""
    from age_model.predictor import load_predictor as load

    return load(
        args.model,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        score_threshold=args.face_score,
        backend=args.backend,
        threads=args.threads,
    )


def print_table(files: Sequence[str], results: Sequence, out: TextIO, threshold: float = DEFAULT_THRESHOLD) -> None:
    """A readable table: one row per face with the app's verdict, or one row saying why a photo has none."""
    width = max([len("photo")] + [len(f) for f in files])
    out.write(f"{'photo':<{width}}  face    age  spread  score  {'ID check':<12}  box (x0, y0, x1, y1)\n")
    for name, result in zip(files, results):
        if result.error or not result.faces:
            out.write(f"{name:<{width}}  -     {result.error or result.message}\n")
            continue
        for number, face in enumerate(result.faces, 1):
            shown = min(max(face.age, 0.0), 100.0)
            box = ", ".join(f"{v:.0f}" for v in face.box)
            said = verdict(face.age, face.spread, threshold)
            figures = f"{number:>4}  {shown:5.1f}  ±{face.spread:5.1f}  {face.score:5.2f}  {said:<12}"
            out.write(f"{name:<{width}}  {figures}  ({box})\n")


def print_json(files: Sequence[str], results: Sequence, out: TextIO, threshold: float = DEFAULT_THRESHOLD) -> None:
    """One JSON object per photo; every face carries the app's verdict at ``threshold``."""
    for name, result in zip(files, results):
        record = {"file": name, **result.to_dict(), "threshold": threshold}
        record["faces"] = [
            {
                **face,
                "box": [round(v, 1) for v in face["box"]],
                "verdict": verdict(face["age"], face["spread"], threshold),
            }
            for face in record["faces"]
        ]
        out.write(json.dumps(record) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    low, high = THRESHOLD_RANGE
    if not low <= args.threshold <= high:
        print(
            f"error: --threshold is the ID-check age ({low:g}-{high:g}), got {args.threshold:g}; "
            "the face detection score is --face-score",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not args.bands:
        given = [
            flag
            for flag, value in (
                ("--csv", args.csv),
                ("--summary-csv", args.summary_csv),
                ("--num-proc", args.num_proc != 1),
                ("--every", args.every != 1.0),
            )
            if value
        ]
        if given:
            print(f"error: {', '.join(given)} only go with --bands", file=sys.stderr)
            return EXIT_USAGE
    else:
        from age_model.groups import Bands

        try:
            Bands.parse(args.band_edges)
        except ValueError as error:
            print(f"error: --band-edges: {error}", file=sys.stderr)
            return EXIT_USAGE
        if not args.every > 0 or args.num_proc < 1:
            print("error: --every must be above 0 and --num-proc at least 1", file=sys.stderr)
            return EXIT_USAGE
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stdout/stderr to the results
    from age_model.predictor import HOW_TO_GET_A_MODEL, ModelLoadError

    try:
        predictor = load_predictor(args)
    except ModelLoadError as error:
        print(f"error: {error}.\n{HOW_TO_GET_A_MODEL}", file=sys.stderr)
        return EXIT_USAGE
    if args.bands:
        from age_model.groups import run_cli

        return run_cli(args, predictor, args.model or default_model(), sys.stdout, sys.stderr)
    results = predictor.predict(list(args.photos))
    (print_json if args.json else print_table)(args.photos, results, sys.stdout, args.threshold)
    return EXIT_ALL_FAILED if all(r.error for r in results) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
