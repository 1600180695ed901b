"""Image bytes: validation, content hashing, metadata stripping, crash-safe content-addressed files.

Write order (why it is crash safe): bytes go to ``<root>/.tmp/*.part``, are fsynced, renamed
atomically to ``<root>/<id[:2]>/<id><ext>`` and the folder is fsynced; only then does the store
commit the database row. A crash before the commit leaves at worst an unreferenced file (listed
and removed by ``fsck``), never a row pointing at a missing or half-written file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidFieldError, InvalidImageError

EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "GIF": ".gif",
    "TIFF": ".tif",
}
SAMPLE_ID = re.compile(r"[0-9a-f]{64}")
TMP_DIR = ".tmp"


def sample_id_of(data: bytes) -> str:
    """The id the training data loader gives a dataset row: sha256 of the image file bytes."""
    return hashlib.sha256(data).hexdigest()


def check_sample_id(sample_id: Any) -> str:
    """A lowercase 64-hex sha256, or InvalidFieldError: ids are keys, a typo must not pass."""
    if not isinstance(sample_id, str) or not SAMPLE_ID.fullmatch(sample_id):
        raise InvalidFieldError(f"sample id must be a lowercase sha256 hex digest, got {sample_id!r}")
    return sample_id


def read_image_input(image: Any) -> bytes:
    """Bytes from bytes-like input or a file path (str / PathLike)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InvalidImageError(f"image file not found: {path}")
        return path.read_bytes()
    raise InvalidImageError(f"image must be bytes or a file path, got {type(image).__name__}")


def check_image(data: bytes) -> str:
    """Fully decode the bytes (truncated files fail too) and return the file extension to use."""
    if not data:
        raise InvalidImageError("image is empty")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
    except Exception as exc:  # Pillow raises many types for bad input, bombs included
        raise InvalidImageError(f"not a readable image: {exc}") from None
    if fmt not in EXTENSIONS:
        raise InvalidImageError(f"unsupported image format {fmt!r}; use one of {sorted(set(EXTENSIONS))}")
    return EXTENSIONS[fmt]


def strip_metadata(image: Any, quality: int = 95) -> bytes:
    """Re-encode as a metadata-free RGB JPEG (no EXIF/GPS, no ICC, no comments).

    Accepts bytes, a path, a PIL image or an HxWxC uint8 array (what Gradio hands over). The EXIF
    orientation is applied first so a phone photo does not end up sideways. Deterministic: the
    same input gives the same bytes, so re-uploading one photo adds no copy.
    """
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        im = image
    elif hasattr(image, "__array_interface__"):
        im = Image.fromarray(image)
    else:
        data = read_image_input(image)
        check_image(data)
        im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im).convert("RGB")
    clean = Image.new("RGB", im.size)
    clean.paste(im)
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Atomic rename into place, then make the rename itself durable."""
    os.replace(tmp, final)
    _fsync_dir(final.parent)


class ImageDir:
    """The content-addressed folder of image files beside the database."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def relpath(self, sample_id: str, ext: str) -> str:
        return f"{sample_id[:2]}/{sample_id}{ext}"

    def resolve(self, relpath: str) -> Path:
        return self.root / relpath

    def save(self, data: bytes, sample_id: str, ext: str) -> str:
        """Store bytes once under their hash; return the relative path. Safe to call concurrently."""
        rel = self.relpath(sample_id, ext)
        final = self.resolve(rel)
        if final.exists():
            os.utime(final)  # fresh mtime: keeps a concurrent `fsck --clean` grace window away from it
            return rel
        tmp_dir = self.root / TMP_DIR
        for folder in (self.root, tmp_dir, final.parent):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(folder.parent)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            _publish(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return rel

    def files(self) -> Iterator[tuple[str, Path]]:
        """(relative posix path, path) of every stored file, temp files excluded."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.name == TMP_DIR:
                continue
            if sub.is_file():
                yield sub.name, sub
                continue
            for path in sorted(sub.iterdir()):
                yield f"{sub.name}/{path.name}", path

    def temp_files(self) -> list[Path]:
        tmp_dir = self.root / TMP_DIR
        return sorted(tmp_dir.iterdir()) if tmp_dir.is_dir() else []
