"""Shoppers by age group: faces in photos, folders, zips and videos counted per age band.

The marketing half of the checkout camera's brief: not "is this person 25?" but "how many of
today's shoppers were 25-34?". Every face found gets one :class:`FaceRow` (where it was, its age,
spread and band) and a :class:`Report` sums the rows into a count and a share per band.

- **Bands** (:class:`Bands`) are configurable; the default is 0-17, 18-24, 25-34, 35-44, 45-54,
  55-64, 65+.
- **The uncertain rule**: a face whose plausible range, age ± spread, crosses a band edge is
  counted as **uncertain**, in no band (its ``estimate_band`` still says where its estimate fell).
  A share per band therefore counts only the faces the model places in that band with confidence.
- **Inputs** (:func:`expand_inputs`): a photo, a folder (walked recursively), a zip (members read in
  memory, never extracted; limits on members, sizes and compression ratio; unsafe names refuse the
  whole zip) or a video (OpenCV, one frame every ``every_seconds``; the same face across
  neighbouring frames is followed by :class:`BoxTracker` and counted once).
- **Privacy**: nothing but the rows is kept: no photo, frame or face crop is written anywhere, and
  the tracker holds boxes only, for the length of one video.
- **Bad input** never stops a run: each bad file becomes one line in ``Report.problems`` and what
  was counted before it is kept.
- **At scale**: :class:`FaceRows` is the same per-photo function as a batched
  ``datasets.Dataset.map`` (``num_proc`` processes); Ray Data's ``map_batches`` takes it as is.
"""

from __future__ import annotations

import csv
import io
import math
import os
import posixpath
import time
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np

if TYPE_CHECKING:
    import argparse

    from age_model.predictor import AgePredictor, FaceEstimate

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".mpo"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})
ZIP_SUFFIXES = frozenset({".zip"})
DEFAULT_EDGES = (18, 25, 35, 45, 55, 65)
UNCERTAIN = "uncertain"
NO_FACE = "no face"
UNREADABLE = "unreadable"
UNCERTAIN_RULE = (
    "uncertain: the face's age ± spread crosses a band edge, so it is counted in no band; "
    "'by estimate' (estimate_band) puts every face in the band of its estimate"
)
PRIVACY_NOTE = "Only the rows and the summary are kept: no photo, video frame or face crop is stored."
Progress = Callable[[float, str], None]


# --------------------------------------------------------------------------- bands


@dataclass(frozen=True)
class Bands:
    """Age bands from their lower edges: ``edges=(18, 25)`` gives 0-17, 18-24 and 25+.

    A band named ``a-b`` holds ages in [a, b + 1): 24.9 is in 18-24, 25.0 in 25-34. Ages under 0
    count as 0.
    """

    edges: tuple[int, ...] = DEFAULT_EDGES

    def __post_init__(self) -> None:
        edges = tuple(int(e) for e in self.edges)
        if any(e != float(v) for e, v in zip(edges, self.edges)):
            raise ValueError(f"Band edges must be whole years, got {list(self.edges)}.")
        if not edges or edges[0] < 1 or list(edges) != sorted(set(edges)) or edges[-1] > 120:
            raise ValueError(f"Band edges must be increasing whole years between 1 and 120, got {list(self.edges)}.")
        object.__setattr__(self, "edges", edges)

    @classmethod
    def parse(cls, text: str) -> "Bands":
        """``"18,25,35,45,55,65"`` (the lower edges) or ``"0-17,18-24,25-34,35+"`` (the bands)."""
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        try:
            if any("-" in p or p.endswith("+") for p in parts):
                lows = [int(p.rstrip("+").split("-")[0]) for p in parts]
                if lows[0] != 0 or not parts[-1].endswith("+"):
                    raise ValueError
                for part, next_low in zip(parts, lows[1:]):
                    if "-" not in part or int(part.split("-")[1]) + 1 != next_low:
                        raise ValueError
                return cls(tuple(lows[1:]))
            return cls(tuple(int(p) for p in parts))
        except (ValueError, IndexError):
            raise ValueError(
                f"Bands {text!r} not understood: give the lower edges (18,25,35,45,55,65) or the bands "
                "without gaps from 0 to an open end (0-17,18-24,25-34,35+)."
            ) from None

    @property
    def names(self) -> list[str]:
        lows = (0, *self.edges)
        return [f"{low}-{high - 1}" for low, high in zip(lows, self.edges)] + [f"{self.edges[-1]}+"]

    def index(self, age: float) -> int:
        return int(np.searchsorted(np.asarray(self.edges, dtype=float), max(float(age), 0.0), side="right"))

    def name(self, age: float) -> str:
        return self.names[self.index(age)]

    def classify(self, age: float, spread: float) -> tuple[str, str]:
        """(band, estimate_band): ``band`` is :data:`UNCERTAIN` when age ± spread crosses an edge."""
        estimate = self.name(age)
        low, high = self.index(age - abs(spread)), self.index(age + abs(spread))
        return (estimate if low == high else UNCERTAIN), estimate


# --------------------------------------------------------------------------- rows and the report


@dataclass
class FaceRow:
    """One face: ``file`` (a photo, ``archive.zip:member``, or a video), for a video the time it was
    first and last seen (seconds) and in how many sampled frames; its box (x0, y0, x1, y1, pixels of
    the photo or frame where it was first seen), age and spread in years, and band."""

    file: str
    x0: float
    y0: float
    x1: float
    y1: float
    age: float | None
    spread: float | None
    band: str
    estimate_band: str
    time_s: float | None = None
    until_s: float | None = None
    frames: int = 1
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


ROW_COLUMNS = [f.name for f in fields(FaceRow)]
CSV_COLUMNS = ["file", "time_s", "until_s", "frames", "x0", "y0", "x1", "y1", "age", "spread", "band", "estimate_band"]


def face_row(name: str, face: Any, bands: Bands, **extra: Any) -> FaceRow:
    band, estimate = bands.classify(face.age, face.spread)
    x0, y0, x1, y1 = (round(float(v), 1) for v in face.box)
    return FaceRow(
        file=name,
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
        age=round(float(face.age), 2),
        spread=round(float(face.spread), 2),
        band=band,
        estimate_band=estimate,
        **extra,
    )


@dataclass
class BandCount:
    band: str
    faces: int  # faces placed in this band with confidence (their ± inside it); for "uncertain", the rest
    by_estimate: int  # faces whose estimate falls in this band, uncertain ones included
    share: float  # faces / all faces
    share_by_estimate: float


@dataclass
class Report:
    """Everything a run counted, and every input it could not read (``problems``)."""

    bands: Bands = field(default_factory=Bands)
    rows: list[FaceRow] = field(default_factory=list)
    photos: int = 0  # photos read (with or without a face)
    no_face: int = 0  # of those, photos without a face
    videos: int = 0
    video_seconds: float = 0.0  # video time covered
    frames: int = 0  # video frames sampled
    skipped: int = 0  # files of other kinds inside folders and zips
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def faces(self) -> int:
        return sum(1 for r in self.rows if r.age is not None)

    @property
    def counted_anything(self) -> bool:
        return self.photos > 0 or self.frames > 0

    def summary(self) -> list[BandCount]:
        return summarise(self.rows, self.bands)

    def add(self, other: "Report") -> None:
        self.rows += other.rows
        for name in ("photos", "no_face", "videos", "video_seconds", "frames", "skipped", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems += other.problems


def summarise(rows: Iterable[Any], bands: Bands = Bands()) -> list[BandCount]:
    """Counts and shares per band, then an ``uncertain`` line and a ``total`` line.

    ``rows`` are :class:`FaceRow` objects or mappings with ``band`` and ``estimate_band`` (such as
    the rows of a ``Dataset.map(FaceRows(...))`` output); rows without a face are left out.
    """
    sure = dict.fromkeys(bands.names, 0)
    by_estimate = dict.fromkeys(bands.names, 0)
    uncertain = 0
    for row in rows:
        get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
        band, estimate = get("band"), get("estimate_band")
        if estimate not in by_estimate:
            continue  # a photo without a face, or an unreadable one
        by_estimate[estimate] += 1
        if band == UNCERTAIN:
            uncertain += 1
        else:
            sure[band] += 1
    total = sum(by_estimate.values())

    def share(n: int) -> float:
        return n / total if total else 0.0

    lines = [
        BandCount(name, sure[name], by_estimate[name], share(sure[name]), share(by_estimate[name]))
        for name in bands.names
    ]
    lines.append(BandCount(UNCERTAIN, uncertain, 0, share(uncertain), 0.0))
    lines.append(BandCount("total", total, total, 1.0 if total else 0.0, 1.0 if total else 0.0))
    return lines


def summary_markdown(report: Report) -> str:
    lines = ["| band | faces | share | by estimate | share by estimate |", "|---|---:|---:|---:|---:|"]
    for line in report.summary():
        if line.band == UNCERTAIN:
            lines.append(f"| {UNCERTAIN} (± crosses a band edge) | {line.faces} | {line.share:.0%} | | |")
        elif line.band == "total":
            lines.append(f"| **total** | **{line.faces}** | | **{line.by_estimate}** | |")
        else:
            lines.append(
                f"| {line.band} | {line.faces} | {line.share:.0%} | {line.by_estimate} | {line.share_by_estimate:.0%} |"
            )
    return "\n".join(lines)


def counted_text(report: Report) -> str:
    """One sentence: what was read."""
    parts = [f"{report.photos} photo{'s' if report.photos != 1 else ''} ({report.no_face} without a face)"]
    if report.videos:
        parts.append(
            f"{report.videos} video{'s' if report.videos != 1 else ''} "
            f"({report.video_seconds:.0f} s, {report.frames} frames sampled)"
        )
    text = f"{report.faces} face{'s' if report.faces != 1 else ''} in " + " and ".join(parts)
    if report.skipped:
        text += f"; {report.skipped} other file{'s' if report.skipped != 1 else ''} skipped"
    return text + "."


def write_csv(rows: Iterable[FaceRow], out: str | Path | io.TextIOBase) -> None:
    """The face rows as CSV (:data:`CSV_COLUMNS`); empty cells where a value does not apply."""

    def write(handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            if row.age is not None:
                writer.writerow({k: ("" if v is None else v) for k, v in row.to_dict().items()})

    if isinstance(out, (str, Path)):
        with open(out, "w", newline="", encoding="utf-8") as handle:
            write(handle)
    else:
        write(out)


def write_summary_csv(report: Report, out: str | Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["band", "faces", "share", "by_estimate", "share_by_estimate"])
        for line in report.summary():
            writer.writerow(
                [line.band, line.faces, f"{line.share:.4f}", line.by_estimate, f"{line.share_by_estimate:.4f}"]
            )


# --------------------------------------------------------------------------- limits and inputs


@dataclass(frozen=True)
class Limits:
    """What one run reads at most. ``None``: no limit. The command line's defaults are generous;
    the public page uses :data:`PAGE_LIMITS`."""

    zip_members: int = 100_000  # files (not folders) in one zip
    zip_bytes: int = 20 * 2**30  # declared uncompressed bytes of one zip, all members together
    member_bytes: int = 100 * 2**20  # declared uncompressed bytes of one member
    zip_ratio: float = 100.0  # declared uncompressed / compressed size of a member over 1 MB
    photos: int | None = None  # photos per run (those after it are not read)
    video_seconds: float | None = 4 * 3600.0  # video time read per video (the rest is not read)
    frame_pixels: int = 4096 * 4096  # a video frame's width x height


PAGE_LIMITS = Limits(
    zip_members=1000,
    zip_bytes=500 * 2**20,
    member_bytes=30 * 2**20,
    zip_ratio=100.0,
    photos=2000,
    video_seconds=300.0,
    frame_pixels=1920 * 1080,
)


def reason(error: BaseException) -> str:
    """An error in words without a file path (an OSError's text names the server's path)."""
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error) or type(error).__name__


class InputError(ValueError):
    """One input cannot be read; the message names it and says what to do."""


class LimitReached(InputError):
    """A run-wide limit (``Limits.photos``) was reached: nothing after it is read."""


@dataclass
class Photo:
    """A photo to read: ``data`` is a path or the bytes (zip members are never written to disk)."""

    name: str
    data: "Path | bytes | _ZipMember"


@dataclass
class Video:
    name: str
    path: Path


def kind_of(path: Path) -> str:
    """``photo``, ``video``, ``zip`` or ``other``, from the suffix (content is checked when read)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "photo"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in ZIP_SUFFIXES:
        return "zip"
    return "other"


def safe_member_name(name: str) -> bool:
    """False for names that would escape a folder if extracted (absolute, drive letters, ``..``)."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts = name.replace("\\", "/").split("/")
    return ".." not in parts


def zip_photos(path: Path, name: str, limits: Limits) -> tuple[list[Photo], int]:
    """The photos of a zip, read into memory one at a time when iterated, and the count of other files.

    The whole zip is refused (:class:`InputError`) before anything is read when it is not a zip,
    names a member outside itself (``../``, absolute), has more members or declares more bytes than
    the limits allow, or a member looks like a zip bomb (a declared size over the limit, or a
    compression ratio above ``limits.zip_ratio``).
    """
    declared_entries = _declared_entries(path)
    if declared_entries is not None and declared_entries > limits.zip_members:  # before parsing its whole directory
        raise InputError(
            f"{name}: {declared_entries:,} files, more than the {limits.zip_members:,} allowed in one zip; "
            "split it into smaller zips."
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise InputError(f"{name}: not a readable zip file ({reason(error)}); give the complete zip again.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        bad_names = [m.filename for m in members if not safe_member_name(m.filename)]
        if bad_names:
            raise InputError(
                f"{name}: refused, it names files outside itself ({bad_names[0]!r}); "
                "make the zip again from the photos' folder."
            )
        if len(members) > limits.zip_members:
            raise InputError(
                f"{name}: {len(members):,} files, more than the {limits.zip_members:,} allowed in one zip; "
                "split it into smaller zips."
            )
        declared = sum(m.file_size for m in members)
        if declared > limits.zip_bytes:
            raise InputError(
                f"{name}: would unpack to {declared / 2**20:,.0f} MB, more than the "
                f"{limits.zip_bytes / 2**20:,.0f} MB allowed; split it into smaller zips."
            )
        for member in members:
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > limits.member_bytes or (member.file_size > 2**20 and ratio > limits.zip_ratio):
                raise InputError(
                    f"{name}: refused as a zip bomb, {member.filename!r} declares "
                    f"{member.file_size / 2**20:,.0f} MB ({ratio:,.0f}x its compressed size). "
                    f"Photos over {limits.member_bytes / 2**20:,.0f} MB are not read."
                )
    photos, other, source = [], 0, _ZipSource(path)
    for member in members:
        base = posixpath.basename(member.filename.replace("\\", "/"))
        if base.startswith(".") or member.filename.startswith("__MACOSX/") or kind_of(Path(base)) != "photo":
            other += 1
            continue
        photos.append(Photo(f"{name}:{member.filename}", _ZipMember(source, member.filename, member.file_size)))
    return photos, other


def _declared_entries(path: Path) -> int | None:
    """The number of entries a zip's end record declares (None when it cannot be read: then
    ``zipfile`` says what is wrong). Read first, so that a small upload declaring millions of
    entries is refused without building them all in memory."""
    try:
        with open(path, "rb") as handle:
            end = zipfile._EndRecData(handle)  # the stdlib's own reader of the end record (zip64 included)
        return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])
    except (AttributeError, OSError, ValueError, IndexError, TypeError):
        return None


class _ZipSource:
    """One zip, opened once for all its members (and closed with the last reference to it)."""

    def __init__(self, path: Path) -> None:
        self.path, self._archive = path, None

    def read(self, member: str, size: int) -> bytes:
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.path)
        with self._archive.open(member) as handle:
            data = handle.read(size + 1)  # zipfile stops at the declared size and checks the CRC at the end
        if len(data) > size:
            raise InputError("the member is larger than it declares")
        return data


@dataclass
class _ZipMember:
    """A zip member, read into memory (at most its declared size) only when its batch is scored."""

    source: _ZipSource
    member: str
    size: int

    def read(self) -> bytes:
        return self.source.read(self.member, self.size)


def folder_entries(folder: Path, name: str) -> list[tuple[str, Path]]:
    """Every file under ``folder`` (recursively, sorted, symlinked folders not followed; hidden files skipped)."""
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            if not file.startswith("."):
                path = Path(root) / file
                entries.append((str(Path(name) / path.relative_to(folder)), path))
    return entries


def expand_inputs(
    inputs: Sequence[str | Path | tuple[str, str | Path]], limits: Limits, problems: list[str]
) -> tuple[list[Photo | Video], int]:
    """Inputs to the photos and videos they hold (and the count of other files skipped).

    An input is a path, or ``(display name, path)`` where the name shown must not be the path (the
    app's uploads). Unreadable inputs become one line in ``problems`` each; the rest go on.
    """
    items: list[Photo | Video] = []
    skipped = 0
    for entry in inputs:
        name, path = entry if isinstance(entry, tuple) else (str(entry), entry)
        path = Path(path)
        if path.is_dir():
            entries = folder_entries(path, name)
            found = 0
            for inner_name, inner in entries:
                kind = kind_of(inner)
                if kind == "other":
                    skipped += 1
                    continue
                found += 1
                inner_items, other = _expand_file(inner_name, inner, kind, limits, problems)
                items.extend(inner_items)
                skipped += other
            if not found:
                problems.append(
                    f"{name}: the folder has no photos, zips or videos (looked for "
                    f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES | ZIP_SUFFIXES))})."
                )
            continue
        if not path.is_file():
            problems.append(f"{name}: no such file or folder.")
            continue
        kind = kind_of(path)
        if kind == "other":
            kind = _sniff(path)
        if kind == "other":
            problems.append(
                f"{name}: not a photo, zip or video agecheck reads (photos: JPEG, PNG, WebP, GIF, BMP, "
                "TIFF; videos: MP4, MOV, AVI, MKV, WebM; or a zip of photos)."
            )
            continue
        found, other = _expand_file(name, path, kind, limits, problems)
        items.extend(found)
        skipped += other
    return items, skipped


def _expand_file(
    name: str, path: Path, kind: str, limits: Limits, problems: list[str]
) -> tuple[list[Photo | Video], int]:
    """The photos and videos one file holds, and how many other files a zip had."""
    if kind == "photo":
        return [Photo(name, path)], 0
    if kind == "video":
        return [Video(name, path)], 0
    try:
        photos, other = zip_photos(path, name, limits)
    except InputError as error:
        problems.append(str(error))
        return [], 0
    if not photos:
        videos = "; videos inside a zip are not read: give the video itself" if _has_videos(path) else ""
        problems.append(f"{name}: the zip has no photos (looked for {', '.join(sorted(IMAGE_SUFFIXES))}){videos}.")
    return list(photos), other


def _has_videos(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(kind_of(Path(n)) == "video" for n in archive.namelist())


def _sniff(path: Path) -> str:
    """The kind of a file whose suffix says nothing, from its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if _video_container(head):
        return "video"
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) or head[8:12] == b"WEBP":
        return "photo"
    return "other"


def _video_container(head: bytes) -> str | None:
    """MP4/MOV, AVI or Matroska/WebM from the first 16 bytes; None for anything else.

    Only these reach OpenCV's FFmpeg: a text file named .mp4 could otherwise be an HLS or concat
    playlist that makes FFmpeg open other files or URLs.
    """
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


# --------------------------------------------------------------------------- the box tracker


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    first_box: tuple[float, float, float, float]
    box: tuple[float, float, float, float]
    first_time: float
    last_time: float
    last_frame: int
    ages: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)


class BoxTracker:
    """The same face across neighbouring sampled frames, by box overlap only (no identity, no crop).

    A face in frame *k* continues a track seen in one of the last ``max_missed + 1`` sampled frames
    when their boxes overlap by IoU ≥ ``min_iou``, or when its centre moved less than ``max_shift``
    box widths and its size changed less than 1.5x (a shopper walking between samples). Pairs are
    matched greedily, best overlap first; each face and track is used once. A face that leaves and
    comes back later is a new track: a count of faces per band, not of people.
    """

    def __init__(self, min_iou: float = 0.3, max_shift: float = 0.5, max_missed: int = 1) -> None:
        self.min_iou, self.max_shift, self.max_missed = min_iou, max_shift, max_missed
        self.active: list[Track] = []

    def _score(self, track: Track, box: Sequence[float]) -> float | None:
        overlap = iou(track.box, box)
        if overlap >= self.min_iou:
            return 1.0 + overlap
        width_a, width_b = track.box[2] - track.box[0], box[2] - box[0]
        if width_a <= 0 or width_b <= 0 or not 1 / 1.5 <= width_b / width_a <= 1.5:
            return None
        shift = math.dist(
            ((track.box[0] + track.box[2]) / 2, (track.box[1] + track.box[3]) / 2),
            ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
        )
        limit = self.max_shift * (width_a + width_b) / 2
        return 1.0 - shift / limit if shift < limit else None

    def update(self, frame: int, time_s: float, faces: Sequence[Any]) -> list[Track]:
        """Feed one sampled frame's faces (``.box``, ``.age``, ``.spread``); returns the tracks that ended."""
        pairs = sorted(
            (
                (score, t, f)
                for t, track in enumerate(self.active)
                for f, face in enumerate(faces)
                if (score := self._score(track, face.box)) is not None
            ),
            reverse=True,
        )
        used_tracks, used_faces = set(), set()
        for _, t, f in pairs:
            if t in used_tracks or f in used_faces:
                continue
            used_tracks.add(t)
            used_faces.add(f)
            self._extend(self.active[t], frame, time_s, faces[f])
        for f, face in enumerate(faces):
            if f not in used_faces:
                box = tuple(float(v) for v in face.box)
                track = Track(first_box=box, box=box, first_time=time_s, last_time=time_s, last_frame=frame)
                self._extend(track, frame, time_s, face)
                self.active.append(track)
        ended = [t for t in self.active if frame - t.last_frame > self.max_missed]
        self.active = [t for t in self.active if frame - t.last_frame <= self.max_missed]
        return ended

    @staticmethod
    def _extend(track: Track, frame: int, time_s: float, face: FaceEstimate) -> None:
        track.box = tuple(float(v) for v in face.box)
        track.last_frame, track.last_time = frame, time_s
        track.ages.append(float(face.age))
        track.spreads.append(float(face.spread))

    def finish(self) -> list[Track]:
        ended, self.active = self.active, []
        return ended


@dataclass
class _TrackFace:
    box: tuple[float, float, float, float]
    age: float
    spread: float


def track_row(name: str, track: Track, bands: Bands) -> FaceRow:
    """A track's row: the mean age and the mean spread over its frames (the frames of one face are
    not independent views, so the spread is not narrowed), the box where it was first seen."""
    face = _TrackFace(track.first_box, float(np.mean(track.ages)), float(np.mean(track.spreads)))
    return face_row(
        name, face, bands, time_s=round(track.first_time, 2), until_s=round(track.last_time, 2), frames=len(track.ages)
    )


# --------------------------------------------------------------------------- counting


class GroupCounter:
    """Count faces per band over photos, folders, zips and videos with one loaded :class:`AgePredictor`."""

    def __init__(
        self,
        predictor: AgePredictor,
        bands: Bands = Bands(),
        limits: Limits = Limits(),
        every_seconds: float = 1.0,
        photo_batch: int = 16,
        tracker: Callable[[], BoxTracker] = BoxTracker,
    ) -> None:
        if not every_seconds > 0:
            raise ValueError("every_seconds must be above 0")
        self.predictor, self.bands, self.limits = predictor, bands, limits
        self.every_seconds, self.photo_batch, self.tracker = float(every_seconds), max(1, photo_batch), tracker

    def run(self, inputs: Sequence[str | Path | tuple[str, str | Path]], progress: Progress | None = None) -> Report:
        """Read every input; bad ones become ``Report.problems`` lines, the others are still counted."""
        report = Report(bands=self.bands)
        items, report.skipped = expand_inputs(inputs, self.limits, report.problems)
        return self.count(items, report, progress)

    def count(self, items: Sequence[Photo | Video], report: Report, progress: Progress | None = None) -> Report:
        """Count the faces of expanded inputs into ``report`` (returned)."""
        start = time.perf_counter()
        progress = progress or (lambda fraction, message: None)
        total = max(len(items), 1)
        batch: list[Photo] = []
        try:
            for done, item in enumerate(items):
                if isinstance(item, Video):
                    self._photos(batch, report)
                    batch = []
                    progress(done / total, item.name)
                    self._video(item, report, lambda f, m, d=done: progress((d + f) / total, m))
                    continue
                if self.limits.photos is not None and report.photos + len(batch) >= self.limits.photos:
                    raise LimitReached(
                        f"Stopped after {self.limits.photos:,} photos, the most one run reads here: "
                        f"{len(items) - done:,} more were not read. What was counted is kept."
                    )
                batch.append(item)
                if len(batch) >= self.photo_batch:
                    self._photos(batch, report)
                    batch = []
                    progress((done + 1) / total, f"{report.photos:,} photos read")
            self._photos(batch, report)
        except LimitReached as error:
            self._photos(batch, report)
            report.problems.append(str(error))
        progress(1.0, "done")
        report.seconds += time.perf_counter() - start
        return report

    def _photos(self, batch: list[Photo], report: Report) -> None:
        if not batch:
            return
        sources: list[Any] = []
        for photo in batch:
            try:
                sources.append(photo.data.read() if isinstance(photo.data, _ZipMember) else photo.data)
            except (InputError, zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as error:
                sources.append(None)
                report.problems.append(f"{photo.name}: could not be read from the zip ({reason(error)}).")
        readable = [(p, s) for p, s in zip(batch, sources) if s is not None]
        results = self.predictor.predict([s for _, s in readable]) if readable else []
        for (photo, _), result in zip(readable, results):
            if result.error:
                report.problems.append(f"{photo.name}: {result.error}")
                continue
            report.photos += 1
            if not result.faces:
                report.no_face += 1
            report.rows.extend(face_row(photo.name, face, self.bands) for face in result.faces)

    def _video(self, video: Video, report: Report, progress: Progress) -> None:
        """Sample one frame every ``every_seconds``, follow faces with the tracker, one row per track."""
        tracker = self.tracker()
        try:
            for frame, time_s, faces in self.video_faces(video, report, progress):
                for track in tracker.update(frame, time_s, faces):
                    report.rows.append(track_row(video.name, track, self.bands))
        except InputError as error:
            report.problems.append(str(error))
        finally:  # a video that breaks half-way keeps the faces seen before
            report.rows.extend(track_row(video.name, t, self.bands) for t in tracker.finish())

    def video_faces(self, video: Video, report: Report, progress: Progress) -> Iterator[tuple[int, float, list[Any]]]:
        """(sampled frame number, time in seconds, faces) for each sampled frame, in order."""
        import cv2

        with open(video.path, "rb") as handle:
            head = handle.read(16)
        if _video_container(head) is None:
            raise InputError(f"{video.name}: not a video file agecheck reads (MP4, MOV, AVI, MKV or WebM).")
        capture = cv2.VideoCapture(str(video.path), cv2.CAP_FFMPEG)
        index, fps = 0, 0.0
        try:
            if not capture.isOpened():
                raise InputError(
                    f"{video.name}: the video could not be opened (corrupt, truncated or an unsupported codec)."
                )
            fps = capture.get(cv2.CAP_PROP_FPS)
            width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
            if not (math.isfinite(fps) and 0 < fps <= 1000):
                fps = 0.0
                raise InputError(f"{video.name}: the video's frame rate cannot be read.")
            if width * height > self.limits.frame_pixels:
                raise InputError(
                    f"{video.name}: frames of {width:.0f}x{height:.0f} are larger than the "
                    f"{self.limits.frame_pixels / 1e6:.1f} MP allowed."
                )
            frame_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            duration = frame_count / fps if frame_count and frame_count > 0 else None
            step = max(1, round(self.every_seconds * fps))
            limit = self.limits.video_seconds
            report.videos += 1
            sampled, pending = 0, []
            while capture.grab():
                time_s = index / fps
                if limit is not None and time_s >= limit:
                    report.problems.append(
                        f"{video.name}: only the first {limit / 60:g} minutes were read "
                        "(the most one video may have here); the faces in them are counted."
                    )
                    break
                if index % step == 0:
                    ok, frame = capture.retrieve()
                    if not ok or frame is None:
                        raise InputError(
                            f"{video.name}: frame {index} could not be decoded; "
                            f"the {time_s:.0f} s before it are counted."
                        )
                    if frame.shape[0] * frame.shape[1] > self.limits.frame_pixels:
                        raise InputError(
                            f"{video.name}: a frame is larger than the {self.limits.frame_pixels / 1e6:.1f} MP allowed."
                        )
                    pending.append((sampled, time_s, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                    sampled += 1
                    if len(pending) >= self.photo_batch:
                        yield from self._frame_faces(pending, report)
                        pending = []
                        if duration:
                            progress(min(time_s / duration, 1.0), f"{video.name}: {time_s:.0f} of {duration:.0f} s")
                index += 1
            if index == 0:
                raise InputError(f"{video.name}: no frame could be read (corrupt or an unsupported codec).")
            yield from self._frame_faces(pending, report)
        finally:
            capture.release()
            if fps:
                report.video_seconds += index / fps

    def _frame_faces(
        self, pending: list[tuple[int, float, np.ndarray]], report: Report
    ) -> Iterator[tuple[int, float, list[Any]]]:
        if not pending:
            return
        results = self.predictor.predict([frame for _, _, frame in pending])
        for (sampled, time_s, _), result in zip(pending, results):
            report.frames += 1
            yield sampled, time_s, ([] if result.error else result.faces)


# --------------------------------------------------------------------------- at scale: Dataset.map


class FaceRows:
    """The per-photo function as a batched ``datasets.Dataset.map``: a batch of images in, one row
    per face out (plus one row per photo without a face or unreadable, ``age`` None and ``band``
    ``"no face"`` / ``"unreadable"``, so counts of photos are exact). Output columns: :data:`ROW_COLUMNS`.

        rows = dataset.map(FaceRows("models/agecheck-default"), batched=True, batch_size=64, num_proc=4,
                           remove_columns=dataset.column_names, features=FaceRows.features())
        summarise(rows)

    ``image_column`` holds PIL images, ``{"bytes", "path"}`` dicts (an ``Image(decode=False)``
    column) or file paths. The model is loaded once per process, on first use (``num_proc``
    processes each load their own, with ``threads`` torch threads each).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        bands: Bands = Bands(),
        image_column: str = "image",
        name_column: str | None = None,
        tta: bool = True,
        score_threshold: float | None = None,
        threads: int | None = 1,
        predictor: AgePredictor | None = None,
    ) -> None:
        if model is None and predictor is None:
            raise ValueError("give a model (folder or Hub id) or a loaded predictor")
        self.model = None if model is None else str(model)
        self.bands, self.image_column, self.name_column = bands, image_column, name_column
        self.tta, self.score_threshold, self.threads = tta, score_threshold, threads
        self._predictor, self._pid = predictor, os.getpid()

    def __getstate__(self) -> dict[str, Any]:  # processes and Ray workers load their own model
        state = dict(self.__dict__)
        if self.model is not None:
            state["_predictor"] = None
        return state

    @staticmethod
    def features():  # -> datasets.Features
        from datasets import Features, Value

        kinds = {
            "file": "string",
            "x0": "float64",
            "y0": "float64",
            "x1": "float64",
            "y1": "float64",
            "age": "float64",
            "spread": "float64",
            "band": "string",
            "estimate_band": "string",
            "time_s": "float64",
            "until_s": "float64",
            "frames": "int64",
            "note": "string",
        }
        return Features({name: Value(kinds[name]) for name in ROW_COLUMNS})

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from age_model.faces.detection import DEFAULT_SCORE_THRESHOLD
            from age_model.predictor import AgePredictor

            if self.threads and os.getpid() != self._pid:  # a worker process: its own small share of the CPU
                import torch

                torch.set_num_threads(self.threads)  # (never cv2.setNumThreads in a forked child: it can hang)
            threshold = DEFAULT_SCORE_THRESHOLD if self.score_threshold is None else self.score_threshold
            self._predictor = AgePredictor(
                self.model, device="cpu" if os.getpid() != self._pid else None, tta=self.tta, score_threshold=threshold
            )
        return self._predictor

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        images = list(batch[self.image_column])
        names = [str(n) for n in batch[self.name_column]] if self.name_column else [_image_name(i) for i in images]
        results = self.predictor.predict([_image_source(i) for i in images])
        rows: list[FaceRow] = []
        for name, result in zip(names, results):
            if result.error:
                rows.append(FaceRow(name, 0.0, 0.0, 0.0, 0.0, None, None, UNREADABLE, "", note=result.error))
            elif not result.faces:
                rows.append(FaceRow(name, 0.0, 0.0, 0.0, 0.0, None, None, NO_FACE, ""))
            else:
                rows.extend(face_row(name, face, self.bands) for face in result.faces)
        return {column: [getattr(row, column) for row in rows] for column in ROW_COLUMNS}


def _image_source(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("bytes") or value.get("path")
    return value


def _image_name(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "")
    if isinstance(value, (str, Path)):
        return str(value)
    return str(getattr(value, "filename", "") or "")


def report_from_rows(rows: Iterable[dict[str, Any]], bands: Bands = Bands()) -> Report:
    """A :class:`Report` from ``FaceRows`` output rows (e.g. a mapped Dataset)."""
    report = Report(bands=bands)
    photos: dict[str, bool] = {}
    for row in rows:
        if row["band"] == UNREADABLE:
            report.problems.append(f"{row['file']}: {row['note']}")
            continue
        photos.setdefault(row["file"], False)
        if row["band"] == NO_FACE:
            continue
        photos[row["file"]] = True
        report.rows.append(FaceRow(**{k: row[k] for k in ROW_COLUMNS}))
    report.photos = len(photos)
    report.no_face = sum(1 for has_face in photos.values() if not has_face)
    return report


def map_photos(
    paths: Sequence[tuple[str, Path]],
    model: str | Path,
    bands: Bands = Bands(),
    num_proc: int = 2,
    batch_size: int = 32,
    tta: bool = True,
    score_threshold: float | None = None,
) -> Report:
    """Photo files through ``Dataset.map(FaceRows(...), num_proc=...)``: the one-machine scale-out."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    dataset = Dataset.from_dict({"name": [n for n, _ in paths], "path": [str(p) for _, p in paths]})
    mapper = FaceRows(model, bands, image_column="path", name_column="name", tta=tta, score_threshold=score_threshold)
    rows = dataset.map(
        mapper,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc if len(paths) > 1 else None,
        remove_columns=dataset.column_names,
        features=FaceRows.features(),
        load_from_cache_file=False,
        keep_in_memory=True,
    )
    return report_from_rows(rows, bands)


# --------------------------------------------------------------------------- the command line


class _ProgressLine:
    """Progress on stderr: one updating line on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream, self.tty = stream, bool(getattr(stream, "isatty", lambda: False)())
        self.every, self.last = (0.2 if self.tty else every), 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self.last < self.every and fraction < 1.0:
            return
        self.last = now
        line = f"[{fraction:4.0%}] {message}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100) + ("\n" if fraction >= 1.0 else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def print_rows(rows: Sequence[FaceRow], out: TextIO) -> None:
    width = max([len("file")] + [len(r.file) for r in rows])
    out.write(f"{'file':<{width}}  {'time':<22}    age  spread  band       (estimate)  box (x0, y0, x1, y1)\n")
    for row in rows:
        when = "" if row.time_s is None else f"{row.time_s:.1f}-{row.until_s:.1f} s ({row.frames} fr)"
        box = ", ".join(f"{v:.0f}" for v in (row.x0, row.y0, row.x1, row.y1))
        shown = min(max(row.age or 0.0, 0.0), 100.0)
        out.write(
            f"{row.file:<{width}}  {when:<22}  {shown:5.1f}  ±{row.spread:5.1f}  {row.band:<9}  "
            f"({row.estimate_band:<7})  ({box})\n"
        )


def print_summary(report: Report, out: TextIO) -> None:
    out.write(f"\nFaces by age band: {counted_text(report)}\n")
    out.write(f"{'band':<12}  {'faces':>6}  {'share':>6}  {'by estimate':>11}  {'share':>6}\n")
    for line in report.summary():
        if line.band == UNCERTAIN:
            out.write(f"{UNCERTAIN:<12}  {line.faces:>6}  {line.share:>6.1%}\n")
        elif line.band == "total":
            out.write(f"{'total':<12}  {line.faces:>6}  {'':>6}  {line.by_estimate:>11}\n")
        else:
            out.write(
                f"{line.band:<12}  {line.faces:>6}  {line.share:>6.1%}  {line.by_estimate:>11}  "
                f"{line.share_by_estimate:>6.1%}\n"
            )
    out.write(f"Note: {UNCERTAIN_RULE}.\n")


def summary_json(report: Report) -> dict[str, Any]:
    return {
        "summary": [vars(line) for line in report.summary()],
        "bands": report.bands.names,
        "rule": UNCERTAIN_RULE,
        "photos": report.photos,
        "photos_without_face": report.no_face,
        "videos": report.videos,
        "video_seconds": round(report.video_seconds, 2),
        "frames": report.frames,
        "faces": report.faces,
        "skipped": report.skipped,
        "problems": report.problems,
        "seconds": round(report.seconds, 2),
    }


def run_cli(args: argparse.Namespace, predictor: AgePredictor, model: str, out: TextIO, err: TextIO) -> int:
    """``python -m age_model.predict --bands ...``: 0 when something was read, 1 when nothing could be."""
    import json

    bands = Bands.parse(args.band_edges)
    counter = GroupCounter(predictor, bands, Limits(), every_seconds=args.every)
    report = Report(bands=bands)
    items, report.skipped = expand_inputs(list(args.photos), Limits(), report.problems)
    progress = _ProgressLine(err)
    if args.num_proc and args.num_proc > 1:
        files = [(item.name, item.data) for item in items if isinstance(item, Photo) and isinstance(item.data, Path)]
        rest = [item for item in items if not (isinstance(item, Photo) and isinstance(item.data, Path))]
        if files:
            progress(0.0, f"{len(files):,} photos in {args.num_proc} processes (datasets.Dataset.map)")
            report.add(
                map_photos(
                    files,
                    model,
                    bands,
                    num_proc=args.num_proc,
                    batch_size=args.batch_size,
                    tta=predictor.tta,
                    score_threshold=predictor.score_threshold,
                )
            )
        items = rest
    counter.count(items, report, progress)
    if args.csv:
        write_csv(report.rows, args.csv)
    if args.summary_csv:
        write_summary_csv(report, args.summary_csv)
    if args.json:
        if not args.csv:
            for row in report.rows:
                out.write(json.dumps(row.to_dict()) + "\n")
        out.write(json.dumps(summary_json(report)) + "\n")
    else:
        if not args.csv:
            print_rows(report.rows, out)
        print_summary(report, out)
        if args.csv:
            out.write(f"{report.faces} rows written to {args.csv}\n")
    for problem in report.problems:
        err.write(f"warning: {problem}\n")
    return 0 if report.counted_anything else 1
