"""Crop calibration: measure, on a model's own training crops, which :class:`CropSpec` reproduces them from a photo.

Each training crop is framed into a synthetic photo (:func:`frame_chip`), the detector runs on it,
and every candidate crop is scored by its overlap (:func:`quad_iou`) with the crop's true box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from age_model.faces.crops import CropSpec, aligned_quad, crop_quad
from age_model.faces.detection import DEFAULT_SCORE_THRESHOLD, Box, Face, detect_faces

logger = logging.getLogger(__name__)


@dataclass
class CropFit:
    """What :func:`fit_crop` measured: the best crop plus the mean IoU of every candidate, by name."""

    crop: CropSpec
    iou: dict[str, float]
    detected: int
    framed: int


def frame_chip(chip: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Box]:
    """Put a ready-made face crop into a bigger synthetic photo; returns the photo and the chip's box there.

    The chip is rescaled (longer side 80-320 px, aspect kept), placed off-centre, and surrounded by
    edge-replicated pixels, a flat colour or noise, so detection sees a face in an ordinary photo.
    """
    scale = int(rng.integers(80, 321)) / max(chip.size)
    width, height = max(1, round(chip.width * scale)), max(1, round(chip.height * scale))
    face = np.asarray(chip.convert("RGB").resize((width, height), Image.BICUBIC))
    frame_w, frame_h = int(width * rng.uniform(1.6, 3.2)), int(height * rng.uniform(1.6, 3.2))
    left, top = int(rng.integers(0, frame_w - width + 1)), int(rng.integers(0, frame_h - height + 1))
    borders = (top, frame_h - height - top, left, frame_w - width - left)
    kind = rng.integers(3)
    if kind == 0:
        frame = cv2.copyMakeBorder(face, *borders, cv2.BORDER_REPLICATE)
    else:
        if kind == 1:
            frame = np.empty((frame_h, frame_w, 3), np.uint8)
            frame[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        else:
            frame = rng.integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8)
        frame[top : top + height, left : left + width] = face
    return Image.fromarray(frame), (float(left), float(top), float(left + width), float(top + height))


def quad_iou(quad: np.ndarray, box: Sequence[float]) -> float:
    """Intersection over union of a (possibly turned) crop quad and an axis-aligned box."""
    x0, y0, x1, y1 = box
    rect = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
    inter, _ = cv2.intersectConvexConvex(np.asarray(quad, np.float32), rect)
    union = cv2.contourArea(np.asarray(quad, np.float32)) + (x1 - x0) * (y1 - y0) - inter
    return float(inter / union) if union > 0 else 0.0


def _match(faces: list[Face], box: Box) -> Face | None:
    """The detected face whose centre lies inside the chip, largest first."""
    for face in faces:
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        if box[0] <= cx <= box[2] and box[1] <= cy <= box[3]:
            return face
    return None


def _fit_alignment(pairs: list[tuple[Face, Box]]) -> tuple[float, float]:
    """Median scale and shift that put the aligned square exactly on each chip."""
    scales, shifts = [], []
    for face, box in pairs:
        unit = aligned_quad(face.landmarks, 1.0, 0.0)
        centre0 = unit.mean(axis=0)  # eyes' midpoint (shift 0)
        half1 = np.hypot(*(unit[1] - unit[0])) / 2
        points = np.asarray(face.landmarks)
        eye_to_mouth = (points[3] + points[4]) / 2 - (points[0] + points[1]) / 2
        chip_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        down = (unit[3] - unit[0]) / np.hypot(*(unit[3] - unit[0]))
        scales.append(((box[2] - box[0]) / 2) / half1)
        shifts.append(float((chip_centre - centre0) @ down) / max(float(eye_to_mouth @ down), 1e-9))
    return float(np.median(scales)), float(np.median(shifts))


def fit_crop(
    chips: Sequence[Image.Image],
    seed: int = 0,
    margins: Sequence[float] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> CropFit:
    """Measure which serving crop gives back ``chips`` (a model's training crops) from a photo.

    Each chip is framed into a synthetic photo (:func:`frame_chip`), detected, and every candidate
    crop is scored by its IoU with the chip's true box: ``box`` and ``square`` over ``margins``,
    ``aligned`` at the median fitted scale and shift. The best mean IoU wins. Raises ``ValueError``
    when no chip has a detectable face.
    """
    rng = np.random.default_rng(seed)
    margins = list(margins) if margins is not None else [round(m, 2) + 0.0 for m in np.arange(-0.2, 0.61, 0.05)]
    pairs: list[tuple[Face, Box]] = []
    for chip in chips:
        photo, box = frame_chip(chip, rng)
        face = _match(detect_faces(photo, score_threshold), box)
        if face is not None:
            pairs.append((face, box))
    if not pairs:
        raise ValueError(f"No face was detected in any of the {len(chips)} framed chips: are these face crops?")
    scale, shift = _fit_alignment(pairs)
    candidates = {
        f"{style} margin={m:+.2f}": CropSpec(style=style, margin=m) for style in ("box", "square") for m in margins
    }
    aligned = CropSpec(style="aligned", align_scale=scale, align_shift=shift)
    candidates[f"aligned scale={scale:.3f} shift={shift:.3f}"] = aligned
    iou = {
        name: float(np.mean([quad_iou(crop_quad(face, crop), box) for face, box in pairs]))
        for name, crop in candidates.items()
    }
    best = max(iou, key=iou.get)
    return CropFit(crop=_as_stored(candidates[best]), iou=iou, detected=len(pairs), framed=len(chips))


def _as_stored(crop: CropSpec) -> CropSpec:
    """The precision a model's settings keep: margins to 0.01, the alignment to 1e-4."""
    return replace(
        crop,
        margin=round(crop.margin, 2),
        align_scale=round(crop.align_scale, 4),
        align_shift=round(crop.align_shift, 4),
    )


def calibrate_crop(chips: Sequence[Image.Image], seed: int = 0) -> CropSpec | None:
    """The crop that makes the predictor cut photos the way ``chips`` were cut; None if it cannot be measured.

    Call it on a sample (a few hundred) of a model's training crops and store the result as the
    model's ``AgeSettings.crop``: with the fitted crop the model can serve whole photos
    (``faces="detect"``). Chips with no detectable face give None and a warning, so the caller keeps
    its defaults; it raises nothing for such chips.
    """
    try:
        fit = fit_crop(chips, seed=seed)
    except ValueError as error:
        logger.warning("Crop calibration skipped: %s", error)
        return None
    if fit.detected < 0.5 * fit.framed:
        logger.warning(
            "Only %d of %d training crops had a detectable face: the calibrated crop may not fit them.",
            fit.detected,
            fit.framed,
        )
    logger.info(
        "Crop calibration on %d/%d detected chips: %s (IoU %.3f)",
        fit.detected,
        fit.framed,
        fit.crop,
        max(fit.iou.values()),
    )
    return fit.crop
