"""Face detection: YuNet (OpenCV's ``FaceDetectorYN``) finds faces and their 5 landmarks in an RGB image.

The YuNet model is vendored in ``age_model/assets/yunet`` (MIT, see its ORIGIN.txt): nothing is downloaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

YUNET_PATH = Path(__file__).resolve().parent.parent / "assets" / "yunet" / "face_detection_yunet_2023mar.onnx"
# YuNet was trained on 10-300 px faces: detect on a copy at most this big. 320 kept every face of the
# fixture and of 300 padded UTKFace chips, but its coarser landmarks cost the AAF photo path (valid:
# minors passed 0.0 -> 0.8 %, within ± 69.9 -> 67.9 %, MAE 5.92 -> 6.00); 480 gives back the 640 px
# figures there at ~10 ms instead of ~16 (README: detection, latency).
DETECT_MAX_SIDE = 480
DEFAULT_SCORE_THRESHOLD = 0.7  # 0.9 (zoo default) misses partly hidden faces in group photos
NMS_THRESHOLD = 0.3
TOP_K = 5000
MIN_FACE_PX = 40  # advice given when nothing is found

Box = tuple[float, float, float, float]


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


_local = threading.local()


def _detector(score_threshold: float) -> cv2.FaceDetectorYN:
    """One YuNet per thread: cv2.FaceDetectorYN keeps per-call state (input size) and is not thread-safe."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        if not YUNET_PATH.is_file():
            raise FileNotFoundError(f"The YuNet face detector is missing at {YUNET_PATH}; reinstall agecheck.")
        detector = cv2.FaceDetectorYN.create(str(YUNET_PATH), "", (320, 320), score_threshold, NMS_THRESHOLD, TOP_K)
        _local.detector = detector
    detector.setScoreThreshold(float(score_threshold))
    return detector


def detect_faces(
    image: Image.Image, score_threshold: float = DEFAULT_SCORE_THRESHOLD, max_side: int = DETECT_MAX_SIDE
) -> list[Face]:
    """Faces in ``image`` (a PIL image, e.g. from :func:`load_image`), largest box first.

    Largest first because the biggest face is usually the subject (what :func:`largest_face_crop`
    takes). Big photos are detected on a copy downscaled to ``max_side``; small ones are never
    upscaled (YuNet misses a tight face blown up). Boxes and landmarks are mapped back to the
    original pixels. Raises ``FileNotFoundError`` when the vendored YuNet model is missing.
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
