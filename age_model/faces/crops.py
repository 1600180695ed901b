"""Face crops: cut a detected face out the way a model was trained, as a :class:`CropSpec` says.

Training and serving must frame faces identically (DESIGN.md, "Framing decides accuracy"), so the
training code calls the same :func:`crop_face` / :func:`largest_face_crop` for uncropped photos as
the predictor does. A model's ``AgeSettings.crop`` is its :class:`CropSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from age_model.faces.detection import DEFAULT_SCORE_THRESHOLD, Box, Face, detect_faces
from age_model.faces.intake import ImageSource, load_image

CROP_STYLES = ("box", "square", "aligned")
PADS = {"black": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}
# UTKFace's own aligned chips carry black corners where the alignment left the photo (69 of 500
# sampled chips), so black padding is what an aligned training crop looks like.
DEFAULT_PAD = "black"


@dataclass(frozen=True)
class CropSpec:
    """How a detected face is framed; the defaults here are every model's defaults (``AgeSettings`` uses them).

    ``style="box"``: the detector box with ``margin`` x its size added on each side (APPA-REAL's
    ``_face.jpg`` framing at 0.4); ``"square"``: the same around a square box; ``"aligned"``: eyes
    levelled, square, sized from the landmarks by ``align_scale`` and ``align_shift`` (see
    :func:`aligned_quad`; ``margin`` is then unused). Raises ``ValueError`` for an unknown style.
    """

    style: str = "box"
    margin: float = 0.4
    align_scale: float = 1.0
    align_shift: float = 0.1

    def __post_init__(self) -> None:
        if self.style not in CROP_STYLES:
            raise ValueError(f"Unknown crop style {self.style!r}: choose one of {', '.join(CROP_STYLES)}.")
        for name in ("margin", "align_scale", "align_shift"):  # a config may hold 0 for 0.0
            object.__setattr__(self, name, float(getattr(self, name)))


DEFAULT_CROP = CropSpec()


def expand_box(box: Sequence[float], margin: float, square: bool = False) -> Box:
    """The box grown by ``margin`` x its width left and right and x its height above and below.

    APPA-REAL's ``_face.jpg`` crops use margin 0.4. ``square`` first makes the box a square of
    side max(width, height) around the same centre. A negative margin shrinks the box.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = x1 - x0, y1 - y0
    if square:
        w = h = max(w, h)
    half_w, half_h = w * (0.5 + margin), h * (0.5 + margin)
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def aligned_quad(landmarks: Sequence[Sequence[float]], scale: float = 1.0, shift: float = 0.1) -> np.ndarray:
    """Corners (top-left, top-right, bottom-right, bottom-left) of a square turned upright with the face.

    The geometry is the FFHQ alignment's: the square's axis blends the eye-to-eye and eye-to-mouth
    directions (on 300 UTKFace chips this fits as well as levelling the eyes alone, IoU 0.876 vs
    0.878, and is steadier when a turned head puts one eye landmark off), its half side is ``scale`` x
    max(2 x eye distance, 1.8 x eye-to-mouth distance) (robust to turned heads), its centre lies
    ``shift`` x eye-to-mouth below the eyes' midpoint. ``scale`` and ``shift`` are fitted to a model's
    training crops by :func:`age_model.faces.calibration.calibrate_crop`.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_right, eye_left, _, mouth_right, mouth_left = points  # subject's right = image left
    eye_avg, mouth_avg = (eye_right + eye_left) / 2, (mouth_right + mouth_left) / 2
    eye_to_eye, eye_to_mouth = eye_left - eye_right, mouth_avg - eye_avg
    axis_x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    norm = np.hypot(*axis_x)
    axis_x = axis_x / norm if norm > 1e-9 else np.array([1.0, 0.0])
    axis_y = np.array([-axis_x[1], axis_x[0]])
    half = scale * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth), 1.0)
    centre = eye_avg + shift * eye_to_mouth
    x, y = axis_x * half, axis_y * half
    return np.stack([centre - x - y, centre + x - y, centre + x + y, centre - x + y])


def crop_quad(face_or_box: Face | Sequence[float], crop: CropSpec = DEFAULT_CROP) -> np.ndarray:
    """The crop region as 4 corners (TL, TR, BR, BL) in image coordinates, for any crop style.

    Raises ``ValueError`` when an aligned crop is asked of a bare box (it needs a :class:`Face`'s landmarks).
    """
    if crop.style == "aligned":
        if not isinstance(face_or_box, Face):
            raise ValueError("The 'aligned' crop needs landmarks: pass a Face from detect_faces, not a bare box.")
        return aligned_quad(face_or_box.landmarks, crop.align_scale, crop.align_shift)
    box = face_or_box.box if isinstance(face_or_box, Face) else face_or_box
    x0, y0, x1, y1 = (float(round(v)) for v in expand_box(box, crop.margin, square=crop.style == "square"))
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def crop_face(
    image: Image.Image, face_or_box: Face | Sequence[float], crop: CropSpec = DEFAULT_CROP, pad: str = DEFAULT_PAD
) -> Image.Image:
    """Cut one face out at its native resolution, framed as ``crop`` says, padding where it leaves the photo.

    ``pad`` is ``black`` (what aligned training chips show), ``edge`` or ``reflect``. Axis-aligned
    crops copy pixels exactly. Raises ``ValueError`` for an unknown pad, or an aligned crop of a bare box.
    """
    if pad not in PADS:
        raise ValueError(f"Unknown pad {pad!r}: choose one of {', '.join(PADS)}.")
    quad = crop_quad(face_or_box, crop)
    out_w = max(1, int(round(np.hypot(*(quad[1] - quad[0])))))
    out_h = max(1, int(round(np.hypot(*(quad[3] - quad[0])))))
    source = quad[[0, 1, 3]].astype(np.float32)
    target = np.array([[0, 0], [out_w, 0], [0, out_h]], dtype=np.float32)
    matrix = cv2.getAffineTransform(source, target)
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    cut = cv2.warpAffine(
        pixels, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=PADS[pad], borderValue=(0, 0, 0)
    )
    return Image.fromarray(cut, mode="RGB")


def largest_face_crop(
    image: ImageSource, crop: CropSpec = DEFAULT_CROP, score_threshold: float = DEFAULT_SCORE_THRESHOLD
) -> Image.Image | None:
    """The biggest face of an uncropped photo, framed as ``crop`` says; None if no face.

    For training on uncropped photos: pass the model's ``AgeSettings.crop`` so training crops are
    exactly what the predictor will cut at serving time. Raises
    :class:`~age_model.faces.intake.ImageError` when ``image`` cannot be read as a photo.
    """
    photo = load_image(image)
    faces = detect_faces(photo, score_threshold)
    if not faces:
        return None
    return crop_face(photo, faces[0], crop)
