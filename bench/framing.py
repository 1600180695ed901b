#!/usr/bin/env python
"""Framing parity per source: does the serving crop give back each source's training framing?

    python bench/framing.py --model models/agecheck-default \
        --data ../shared/data/utkface --data ../shared/data/aaf [--n 200]

For each source, N training images are taken as the model saw them in training (the first
source's crops as stored; later sources re-cut through the detector with the model's serving crop,
as train.py does with --reframe auto), each is put into a bigger synthetic photo
(faces.frame_chip), the detector runs on that photo, and the model's serving crop is compared with
the image's true box there (mean IoU). For later sources it also shows the IoU against their crops
*as stored*, i.e. what the framing would be without re-cutting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoConfig

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from age_model.data import load_age_dataset  # noqa: E402
from age_model.faces.calibration import frame_chip, quad_iou  # noqa: E402
from age_model.faces.crops import crop_face, crop_quad  # noqa: E402
from age_model.faces.detection import detect_faces  # noqa: E402
from age_model.modeling import AgeSettings  # noqa: E402


def mean_iou(images: list[Image.Image], settings: AgeSettings, seed: int = 0) -> tuple[float, int]:
    """Mean IoU of the serving crop with each image's box inside a synthetic photo; and how many were found."""
    rng = np.random.default_rng(seed)
    crop = settings.crop
    scores = []
    for image in images:
        photo, box = frame_chip(image, rng)
        faces = [
            f
            for f in detect_faces(photo)
            if box[0] <= (f.box[0] + f.box[2]) / 2 <= box[2] and box[1] <= (f.box[1] + f.box[3]) / 2 <= box[3]
        ]
        if faces:
            scores.append(quad_iou(crop_quad(faces[0], crop), box))
    return (float(np.mean(scores)) if scores else float("nan")), len(scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/agecheck-default")
    parser.add_argument("--data", action="append", required=True, help="sources in training order (repeat)")
    parser.add_argument("--n", type=int, default=200, help="images per source (default %(default)s)")
    args = parser.parse_args(argv)
    settings = AgeSettings.from_config(AutoConfig.from_pretrained(args.model))
    started = time.monotonic()
    print("| source | training framing | serving crop IoU | found | IoU with the crops as stored |")
    print("|---|---|---:|---:|---:|")
    for position, source in enumerate(args.data):
        dataset, _ = load_age_dataset(source)
        train = dataset["train"].shuffle(seed=0).select(range(min(args.n, len(dataset["train"]))))
        stored = [image.convert("RGB") for image in train["image"]]
        if position == 0:
            iou, found = mean_iou(stored, settings)
            print(f"| {Path(source).name} | as stored (reference) | {iou:.3f} | {found}/{len(stored)} | {iou:.3f} |")
            continue
        recut = []
        for image in stored:
            faces = detect_faces(image)
            if faces:
                recut.append(crop_face(image, faces[0], settings.crop))
        iou, found = mean_iou(recut, settings)
        raw, raw_found = mean_iou(stored, settings)
        print(
            f"| {Path(source).name} | re-cut by the detector ({len(recut)}/{len(stored)}) | {iou:.3f} | "
            f"{found}/{len(recut)} | {raw:.3f} |"
        )
    print(f"\n`{' '.join(sys.argv)}`, {time.monotonic() - started:.0f} s; crop: {settings.crop}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
