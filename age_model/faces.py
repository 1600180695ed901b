"""Photo in, face crops out: load any image safely, find faces with YuNet, crop them the way training saw them.

Training and serving must frame faces identically (DESIGN.md, "Framing decides accuracy"), so the
training code calls the same :func:`crop_face` / :func:`largest_face_crop` for uncropped photos, and
:func:`calibrate_crop` measures, on a model's own training crops, which crop reproduces them.

The YuNet model is vendored in ``assets/yunet`` (MIT, see its ORIGIN.txt): nothing is downloaded.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

YUNET_PATH = Path(__file__).resolve().parent / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"
MAX_PIXELS = 50_000_000  # 50 MP: bigger than any phone photo; refuses decompression bombs before decoding
MIN_SIDE = 32  # YuNet finds faces from about 10 px; below 32 px an image cannot hold a usable face
# YuNet was trained on 10-300 px faces: detect on a copy at most this big. 320 is the smallest that
# kept every face of the fixture photos (8/8) and of 300 padded UTKFace test chips (300/300; 256 lost
# one), with the same MAE on those chips (4.68 vs 4.72 at 640) at half the detection time (README, Latency).
DETECT_MAX_SIDE = 320
DEFAULT_SCORE_THRESHOLD = 0.7  # 0.9 (zoo default) misses partly hidden faces in group photos
NMS_THRESHOLD = 0.3
TOP_K = 5000
MIN_FACE_PX = 40  # advice given when nothing is found
CROP_STYLES = ("box", "square", "aligned")
PADS = {"black": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}
# UTKFace's own aligned chips carry black corners where the alignment left the photo (69 of 500
# sampled chips), so black padding is what an aligned training crop looks like.
DEFAULT_PAD = "black"

Box = tuple[float, float, float, float]
ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]


class ImageError(ValueError):
    """The input cannot be used as a photo; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image given to :func:`detect_faces`.

    ``box`` is (x0, y0, x1, y1) and may reach slightly past the image edge for a face cut by the
    border. ``landmarks`` are 5 (x, y) points in YuNet's order: the subject's right eye (image
    left), left eye, nose tip, right mouth corner, left mouth corner.
    """

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


# --------------------------------------------------------------------------- loading


def load_image(source: ImageSource) -> Image.Image:
    """Any supported input as a fresh RGB image: EXIF orientation applied, alpha on white, no metadata.

    Accepts a file path, the file's bytes, a PIL image or a numpy array (H x W, H x W x 1/3/4 in
    RGB(A) order, as PIL and Gradio give; convert OpenCV's BGR first). Multi-frame files (animated
    GIF, multi-page TIFF, MPO phone photos whose frame 0 is the main picture) give their first
    frame. Raises :class:`ImageError` with advice for anything unusable.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _image_from_array(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = _open_bytes(bytes(source), "The uploaded data")
    elif isinstance(source, (str, Path)):
        image = _open_path(Path(source))
    else:
        raise ImageError(
            f"Cannot read an image from a {type(source).__name__}: pass a file path, the file's bytes, "
            "a PIL image or a numpy array."
        )
    _check_size(image.size)
    try:
        rgb = _to_rgb(_exif_transposed(image))
        return Image.frombytes("RGB", rgb.size, rgb.tobytes())  # fresh: no EXIF, ICC, text chunks or GPS
    except (OSError, SyntaxError, EOFError) as error:  # a lazily opened PIL image decodes only here
        raise ImageError(f"The image is truncated or corrupt ({error}): upload the complete file again.") from error


def _open_path(path: Path) -> Image.Image:
    """Messages name the file, not its folder: a server's temporary upload path is nobody's business."""
    if not path.is_file():
        raise ImageError(f"{path.name} does not exist or is not a file: check the path.")
    return _open_bytes(path.read_bytes(), path.name)


def _open_bytes(data: bytes, name: str) -> Image.Image:
    """Decode only after the header says the size is sane (Image.open reads just the header)."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): upload the photo again.")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name} is too large to decode safely ({error}); use a photo under {MAX_PIXELS // 1_000_000} MP.") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{name} is not an image Pillow can read: use a JPEG, PNG, WebP, GIF, BMP or TIFF photo.") from error
    _check_size(image.size)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{name} is truncated or corrupt ({error}): upload the complete file again.") from error
    return image


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is {width}x{height} px ({width * height / 1e6:.0f} MP), more than the "
            f"{MAX_PIXELS // 1_000_000} MP allowed: resize it first."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"The image is {width}x{height} px: too small to contain a face; use one at least "
            f"{MIN_SIDE} px on each side."
        )


def _exif_transposed(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # a corrupt EXIF block should not cost the photo; orientation is then unknown
        logger.warning("Ignoring unreadable EXIF orientation: %s", error)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Every Pillow mode to RGB; transparency is composited on white, high bit depths scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode.startswith("F"):
        return _high_depth_to_l(image).convert("RGB")
    if image.mode in ("P", "PA") and (image.mode == "PA" or "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"Images in colour mode {image.mode!r} are not supported: save the photo as an RGB JPEG or PNG.") from error


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8 bits; Pillow's own convert clips them to 255."""
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        values = values / 257.0  # full 16-bit range -> full 8-bit range
    else:
        values = _rescale_to_255(values)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _rescale_to_255(values: np.ndarray) -> np.ndarray:
    """Guess the value range: [0, 1] floats, 8-bit, 16-bit, else stretch min..max."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 1.0:
        return values * 255.0
    if low >= 0 and high <= 255:
        return values
    if low >= 0 and high <= 65535:
        return values / 257.0
    return (values - low) * (255.0 / max(high - low, 1e-12))


def _image_from_array(array: np.ndarray) -> Image.Image:
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (3, 4)):
        raise ImageError(f"An image array must be H x W, H x W x 3 (RGB) or H x W x 4 (RGBA), not shape {data.shape}.")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    elif data.dtype == np.uint16:
        data = np.rint(data / 257.0).astype(np.uint8)
    elif data.dtype != np.uint8:
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise ImageError(f"Image arrays of dtype {data.dtype} are not supported: use uint8.")
        data = np.clip(np.rint(_rescale_to_255(data.astype(np.float64))), 0, 255).astype(np.uint8)
    mode = "L" if data.ndim == 2 else ("RGB" if data.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(data), mode=mode)


# --------------------------------------------------------------------------- detection

_local = threading.local()


def _detector(score_threshold: float) -> Any:
    """One YuNet per thread: cv2.FaceDetectorYN keeps per-call state (input size) and is not thread-safe."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        if not YUNET_PATH.is_file():
            raise FileNotFoundError(f"The YuNet face detector is missing at {YUNET_PATH}; reinstall agecheck.")
        detector = cv2.FaceDetectorYN.create(str(YUNET_PATH), "", (320, 320), score_threshold, NMS_THRESHOLD, TOP_K)
        _local.detector = detector
    detector.setScoreThreshold(float(score_threshold))
    return detector


def detect_faces(image: Image.Image, score_threshold: float = DEFAULT_SCORE_THRESHOLD, max_side: int = DETECT_MAX_SIDE) -> list[Face]:
    """Faces in ``image`` (a PIL image, e.g. from :func:`load_image`), largest box first.

    Largest first because the biggest face is usually the subject (what :func:`largest_face_crop`
    takes). Big photos are detected on a copy downscaled to ``max_side``; small ones are never
    upscaled (YuNet misses a tight face blown up). Boxes and landmarks are mapped back to the
    original pixels.
    """
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(width, height))
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    detector = _detector(score_threshold)
    detector.setInputSize((small_w, small_h))
    _, rows = detector.detect(bgr)
    if rows is None:
        return []
    faces = [_face_from_row(row, width / small_w, height / small_h) for row in rows]
    return sorted(faces, key=lambda f: (f.width * f.height, f.score), reverse=True)


def _face_from_row(row: np.ndarray, sx: float, sy: float) -> Face:
    x, y, w, h = (float(v) for v in row[:4])
    points = tuple((float(row[4 + 2 * i]) * sx, float(row[5 + 2 * i]) * sy) for i in range(5))
    return Face(box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy), score=float(row[14]), landmarks=points)


# --------------------------------------------------------------------------- cropping


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
    0.878, and is steadier when a turned head puts one eye landmark off), its half side is ``scale`` x max(2 x eye distance, 1.8 x eye-to-mouth distance)
    (robust to turned heads), its centre lies ``shift`` x eye-to-mouth below the eyes' midpoint.
    ``scale`` and ``shift`` are fitted to a model's training crops by :func:`calibrate_crop`.
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


def crop_quad(face_or_box: Face | Sequence[float], style: str = "box", margin: float = 0.4,
              align_scale: float = 1.0, align_shift: float = 0.1) -> np.ndarray:
    """The crop region as 4 corners (TL, TR, BR, BL) in image coordinates, for any crop style."""
    if style not in CROP_STYLES:
        raise ValueError(f"Unknown crop style {style!r}: choose one of {', '.join(CROP_STYLES)}.")
    if style == "aligned":
        if not isinstance(face_or_box, Face):
            raise ValueError("The 'aligned' crop needs landmarks: pass a Face from detect_faces, not a bare box.")
        return aligned_quad(face_or_box.landmarks, align_scale, align_shift)
    box = face_or_box.box if isinstance(face_or_box, Face) else face_or_box
    x0, y0, x1, y1 = (float(round(v)) for v in expand_box(box, margin, square=style == "square"))
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def crop_face(image: Image.Image, face_or_box: Face | Sequence[float], margin: float = 0.4, style: str = "box",
              align_scale: float = 1.0, align_shift: float = 0.1, pad: str = DEFAULT_PAD) -> Image.Image:
    """Cut one face out at its native resolution, padding where the crop leaves the photo.

    ``style="box"``: the detector box with ``margin`` on each side (APPA-REAL ``_face.jpg``
    framing at 0.4); ``"square"``: the same around a square box; ``"aligned"``: eyes levelled,
    square, sized from the landmarks (see :func:`aligned_quad`). ``pad`` is ``black`` (what
    aligned training chips show), ``edge`` or ``reflect``. Axis-aligned crops copy pixels exactly.
    """
    if pad not in PADS:
        raise ValueError(f"Unknown pad {pad!r}: choose one of {', '.join(PADS)}.")
    quad = crop_quad(face_or_box, style, margin, align_scale, align_shift)
    out_w = max(1, int(round(np.hypot(*(quad[1] - quad[0])))))
    out_h = max(1, int(round(np.hypot(*(quad[3] - quad[0])))))
    source = quad[[0, 1, 3]].astype(np.float32)
    target = np.array([[0, 0], [out_w, 0], [0, out_h]], dtype=np.float32)
    matrix = cv2.getAffineTransform(source, target)
    pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    crop = cv2.warpAffine(pixels, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=PADS[pad], borderValue=(0, 0, 0))
    return Image.fromarray(crop, mode="RGB")


def crop_options(settings: Any = None, margin: float | None = None) -> dict[str, Any]:
    """The :func:`crop_face` keyword arguments a model's ``AgeSettings`` (or a bare margin) asks for."""
    if isinstance(settings, (int, float)):
        settings, margin = None, settings
    if settings is None:
        return {"margin": 0.4 if margin is None else float(margin), "style": "box"}
    return {
        "margin": float(getattr(settings, "crop_margin", 0.4)),
        "style": getattr(settings, "crop_style", "box"),
        "align_scale": float(getattr(settings, "align_scale", 1.0)),
        "align_shift": float(getattr(settings, "align_shift", 0.1)),
    }


def largest_face_crop(image: ImageSource, settings_or_margin: Any = 0.4,
                      score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> Image.Image | None:
    """The biggest face of an uncropped photo, framed as ``settings_or_margin`` says; None if no face.

    For training on uncropped photos: pass the model's ``AgeSettings`` so training crops are
    exactly what the predictor will cut at serving time.
    """
    photo = load_image(image)
    faces = detect_faces(photo, score_threshold)
    if not faces:
        return None
    return crop_face(photo, faces[0], **crop_options(settings_or_margin))


# --------------------------------------------------------------------------- calibration


@dataclass
class CropFit:
    """What :func:`fit_crop` measured: the best settings plus the mean IoU of every candidate."""

    settings: dict[str, Any]
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
        frame[top:top + height, left:left + width] = face
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


def fit_crop(chips: Sequence[Image.Image], seed: int = 0, margins: Sequence[float] | None = None,
             score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> CropFit:
    """Measure which serving crop gives back ``chips`` (a model's training crops) from a photo.

    Each chip is framed into a synthetic photo (:func:`frame_chip`), detected, and every candidate
    crop is scored by its IoU with the chip's true box: ``box`` and ``square`` over ``margins``,
    ``aligned`` at the median fitted scale and shift. The best mean IoU wins.
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
    iou: dict[str, float] = {}
    for style in ("box", "square"):
        for m in margins:
            iou[f"{style} margin={m:+.2f}"] = _mean_iou(pairs, style=style, margin=m)
    iou[f"aligned scale={scale:.3f} shift={shift:.3f}"] = _mean_iou(pairs, style="aligned", align_scale=scale, align_shift=shift)
    best = max(iou, key=iou.get)
    return CropFit(settings=_settings_from_name(best, scale, shift), iou=iou, detected=len(pairs), framed=len(chips))


def _mean_iou(pairs: list[tuple[Face, Box]], **options: Any) -> float:
    return float(np.mean([quad_iou(crop_quad(face, **options), box) for face, box in pairs]))


def _settings_from_name(name: str, scale: float, shift: float) -> dict[str, Any]:
    style = name.split()[0]
    settings: dict[str, Any] = {"faces": "detect", "crop_style": style}
    if style == "aligned":
        settings.update(align_scale=round(scale, 4), align_shift=round(shift, 4))
    else:
        settings["crop_margin"] = float(name.split("=")[1])
    return settings


def calibrate_crop(chips: Sequence[Image.Image], seed: int = 0) -> dict[str, Any]:
    """``AgeSettings`` fields that make the predictor cut photos the way ``chips`` were cut.

    Call it on a sample (a few hundred) of a model's training crops and store the result in the
    model's settings. The result includes ``faces="detect"``: with the fitted crop the model can
    serve whole photos. ``crop_style`` plus ``crop_margin`` (box, square) or ``align_scale`` and
    ``align_shift`` (aligned) say the framing. Chips with no detectable face give ``{}`` and a
    warning, so the caller keeps its defaults.
    """
    try:
        fit = fit_crop(chips, seed=seed)
    except ValueError as error:
        logger.warning("Crop calibration skipped: %s", error)
        return {}
    if fit.detected < 0.5 * fit.framed:
        logger.warning("Only %d of %d training crops had a detectable face: the calibrated crop may not fit them.",
                       fit.detected, fit.framed)
    logger.info("Crop calibration on %d/%d detected chips: %s (IoU %.3f)", fit.detected, fit.framed,
                fit.settings, max(fit.iou.values()))
    return fit.settings
