"""Photo in, face crops out, in three steps with a module each, plus the calibration of the crop.

- :mod:`~age_model.faces.intake`: any image input to a safe upright RGB image (``load_image``, ``ImageError``);
- :mod:`~age_model.faces.detection`: YuNet finds the faces and their landmarks (``detect_faces``, ``Face``);
- :mod:`~age_model.faces.crops`: each face cut the way the model was trained (``CropSpec``, ``crop_face``);
- :mod:`~age_model.faces.calibration`: which ``CropSpec`` reproduces a model's training crops (``calibrate_crop``).

The names below are re-exported so ``from age_model.faces import load_image`` keeps working; new
code may import from the module that owns a name.
"""

from age_model.faces.calibration import CropFit, calibrate_crop, fit_crop, frame_chip, quad_iou
from age_model.faces.crops import (
    CROP_STYLES,
    DEFAULT_CROP,
    DEFAULT_PAD,
    PADS,
    CropSpec,
    aligned_quad,
    crop_face,
    crop_quad,
    expand_box,
    largest_face_crop,
)
from age_model.faces.detection import (
    DEFAULT_SCORE_THRESHOLD,
    DETECT_MAX_SIDE,
    MIN_FACE_PX,
    YUNET_PATH,
    Box,
    Face,
    detect_faces,
)
from age_model.faces.intake import MAX_PIXELS, MIN_SIDE, ImageError, ImageSource, load_image

__all__ = [
    "CROP_STYLES",
    "DEFAULT_CROP",
    "DEFAULT_PAD",
    "DEFAULT_SCORE_THRESHOLD",
    "DETECT_MAX_SIDE",
    "MAX_PIXELS",
    "MIN_FACE_PX",
    "MIN_SIDE",
    "PADS",
    "YUNET_PATH",
    "Box",
    "CropFit",
    "CropSpec",
    "Face",
    "ImageError",
    "ImageSource",
    "aligned_quad",
    "calibrate_crop",
    "crop_face",
    "crop_quad",
    "detect_faces",
    "expand_box",
    "fit_crop",
    "frame_chip",
    "largest_face_crop",
    "load_image",
    "quad_iou",
]
