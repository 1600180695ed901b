"""Image intake: any photo input (path, bytes, PIL, numpy) to a fresh upright RGB image, or an :class:`ImageError`.

Anything reachable without a login can be hostile: sizes are checked from the header before
decoding (decompression bombs), every Pillow mode and bit depth becomes 8-bit RGB, EXIF orientation
is applied and no metadata survives.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # 50 MP: bigger than any phone photo; refuses decompression bombs before decoding
MIN_SIDE = 32  # YuNet finds faces from about 10 px; below 32 px an image cannot hold a usable face

ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]


class ImageError(ValueError):
    """The input cannot be used as a photo; the message says what was wrong and what to do."""


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
        raise ImageError(
            f"{name} is too large to decode safely ({error}); use a photo under {MAX_PIXELS // 1_000_000} MP."
        ) from error
    except UnidentifiedImageError as error:
        raise ImageError(
            f"{name} is not an image Pillow can read: use a JPEG, PNG, WebP, GIF, BMP or TIFF photo."
        ) from error
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
        raise ImageError(
            f"Images in colour mode {image.mode!r} are not supported: save the photo as an RGB JPEG or PNG."
        ) from error


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
