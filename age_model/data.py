"""Every supported age data source to one `datasets.DatasetDict` (splits train / validation / test).

Columns: `image` (an `Image()` feature), `age` (float years), `id` (sha256 of the image file's bytes,
the key the feedback store uses), `source`, `file`, and where the source has them
`apparent_age_mean`, `apparent_age_std`, `gender`, `race`.

Sources (``detect_format`` recognises them; ``--data-format`` forces one):
  appa-real    the official release: train/ valid/ test/ + gt_avg_{train,valid,test}.csv, *_face.jpg crops
  final-files  the course variant: final_files/ + labels.csv (file_name,real_age), no split given
  csv          any image folder + a CSV with a file column and an age column, optional split column
  filenames    UTKFace ({age}_{gender}_{race}_{date}.jpg[.chip.jpg]) / FG-NET ({subject}A{age}.JPG) names
  hub          a Hugging Face Hub dataset id, a `save_to_disk` folder, or a parquet export folder

Near-duplicates: rows with the same content id (sha256) or the same 64-bit difference hash (dHash, see
``dhash``) form one group (``near_duplicate_groups``). A split we make keeps each group whole; where the
source gives its own split and a group crosses it, the copies in the later split (validation, then test)
are dropped so no face is both trained and evaluated on (``LoadOptions.find_duplicates`` and
``cross_split_duplicates``; the counts land in ``LoadReport``). Groups whose ages differ by more than
``CONFLICT_TOLERANCE`` years are label conflicts: ``conflicting_groups`` lists them, with a finer 256-bit
dHash saying whether a group really is one photo (equal 64-bit hashes of different aligned faces happen),
and ``python -m age_model.data conflicts SOURCE --out conflicts.csv`` writes them for the annotators.
dHashes are cached by content id in ``~/.cache/agecheck`` (``dhash_cache_path``): a second load costs
next to nothing; the first one decodes every image once (UTKFace: about 12 CPU seconds).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import random
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, Features, Image, Value, concatenate_datasets, load_dataset, load_from_disk
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from age_model.ages import AGE_RANGE, in_age_range
from age_model.repo_ids import is_repo_id

logger = logging.getLogger(__name__)

FORMATS = ("appa-real", "final-files", "csv", "filenames", "hub")
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "validation",
    "val": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})[a-z]?\.jpe?g$", re.IGNORECASE)
# What each source's attribute codes mean: UTKFace's come from its file names
# (shared/data/utkface/ORIGIN.txt); AAF codes gender the other way round (0 = female, 1 = male).
# What the duplicate finders accept: a Dataset, a list of row dicts with an `image`, or a list of images.
ImageRows = Dataset | Sequence[Mapping[str, Any]] | Sequence[Any]
SOURCE_CODES: dict[str, dict[str, dict[str, str]]] = {
    "utkface": {
        "gender": {"0": "male", "1": "female"},
        "race": {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"},
    },
    "aaf": {"gender": {"0": "female", "1": "male"}},
}
# Ages within one near-duplicate group that differ by more than this many years are a label conflict
# (the same photo cannot be two ages; a 1-year gap is within UTKFace's labelling noise).
CONFLICT_TOLERANCE = 1.0
DHASH_VERSION = "dhash-v1"  # 9x8 greyscale, Pillow convert("L") + BILINEAR resize, left < right = 1
# Equal 64-bit dHashes also join different faces: aligned crops share their coarse shading. A 256-bit dHash
# (17x16) tells them apart: on UTKFace copies of one photo differ in at most 20 of its bits, collisions in 26+.
SAME_PHOTO_DISTANCE = 24


class DataError(ValueError):
    """Bad data: the message names the file and row and says what to do."""


@dataclass
class LoadOptions:
    """How to read a source; the defaults suit the layouts described in the module docstring."""

    data_format: str = "auto"
    target: str = "real"  # APPA-REAL: "real" or "apparent"
    image_column: str = "file_name"
    age_column: str = "real_age"
    split_column: str = "split"
    labels_file: str | None = None  # CSV name or path; default labels.csv / the only CSV in the folder
    on_bad_rows: str = "error"  # "error": stop at the first bad row; "skip": leave it out and count it
    split_seed: int = 42
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    verify_images: bool = True
    find_duplicates: bool = True  # group near-duplicates: own splits keep them whole, given splits lose crossing copies
    cross_split_duplicates: str = (
        "drop"  # given split crossed by a group: "drop" the validation/test copies, or "keep" (warn only)
    )


@dataclass
class LoadReport:
    """What loading found: the format, whether images are face crops, and what was skipped and why."""

    data_format: str
    faces: str  # "cropped" (ready-made face crops) or "detect" (photos: faces must be found and cropped)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)
    # near-duplicates (None: not looked for, LoadOptions.find_duplicates=False)
    duplicate_groups: int | None = None  # groups of more than one row (same sha256 or same dHash)
    duplicate_files: int | None = None  # rows in those groups
    conflicting_groups: int | None = None  # groups whose ages differ by more than CONFLICT_TOLERANCE
    cross_split_groups: int | None = None  # groups found in more than one split (only a given split can have them)
    cross_split_dropped: int | None = (
        None  # rows dropped from validation/test for it (0 with cross_split_duplicates="keep")
    )

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_examples) < 10:
            self.skipped_examples.append(detail)


def load_age_dataset(source: str | Path, options: LoadOptions | None = None) -> tuple[DatasetDict, LoadReport]:
    """Read ``source`` (a folder, CSV file, save_to_disk folder or Hub id) into train/validation/test.

    Raises DataError naming the file and row for a missing source, an unknown layout, a bad row (unless
    ``options.on_bad_rows == "skip"``) or an empty result."""
    options = options or LoadOptions()
    data_format = options.data_format if options.data_format != "auto" else detect_format(source)
    if data_format not in FORMATS:
        raise DataError(f"Unknown data format {data_format!r}: choose one of auto, {', '.join(FORMATS)}.")
    loader = {
        "appa-real": _load_appa_real,
        "final-files": _load_final_files,
        "csv": _load_csv_folder,
        "filenames": _load_filenames,
        "hub": _load_hub,
    }[data_format]
    dataset, report = loader(source, options)
    if options.find_duplicates:
        dataset = _check_near_duplicates(dataset, report, options, source)
    for reason, count in report.skipped.items():
        logger.warning("Skipped %d rows: %s (e.g. %s)", count, reason, "; ".join(report.skipped_examples[:3]))
    empty = [name for name in SPLITS if name not in dataset or len(dataset[name]) == 0]
    if "train" in empty:
        raise DataError(
            f"{source}: no usable training rows were found. Check the path, --data-format and column names."
        )
    return dataset, report


def load_age_datasets(
    sources: Iterable[str | Path], options: LoadOptions | None = None
) -> tuple[DatasetDict, list[LoadReport]]:
    """Several sources in one DatasetDict: each split is the concatenation of the sources' splits.

    Every row keeps its ``source`` (the loader's name for it, e.g. ``utkface``, ``aaf``); columns one
    source lacks (``race``, ``apparent_age_mean``, ...) are empty for its rows. Two sources with the
    same name get ``#2``, ``#3`` suffixes so per-source metrics stay apart. Raises DataError as
    :func:`load_age_dataset` does, for the first source that fails.
    """
    loaded: list[tuple[DatasetDict, LoadReport]] = []
    names_seen: dict[str, int] = {}
    for source in sources:
        dataset, report = load_age_dataset(source, options)
        name = _source_name(dataset)
        names_seen[name] = names_seen.get(name, 0) + 1
        if names_seen[name] > 1:
            renamed = f"{name}#{names_seen[name]}"
            dataset = DatasetDict({k: v.map(lambda _: {"source": renamed}) for k, v in dataset.items()})
        loaded.append((dataset, report))
    if len(loaded) == 1:
        return loaded[0][0], [loaded[0][1]]
    columns: dict[str, Any] = {}
    for dataset, _ in loaded:
        for split in dataset.values():
            for column, feature in split.features.items():
                columns.setdefault(column, feature)
    merged: dict[str, Dataset] = {}
    for name in SPLITS:
        parts = [
            _with_columns(dataset[name], columns) for dataset, _ in loaded if name in dataset and len(dataset[name])
        ]
        if parts:
            merged[name] = concatenate_datasets(parts)
    ids: dict[str, str] = {}
    for name, split in merged.items():  # the same image in two sources, or in two splits, is a leak
        for row_id, source in zip(split["id"], split["source"]):
            if row_id in ids and ids[row_id] != f"{name}/{source}":
                logger.warning(
                    "The same image is in %s and %s/%s: check that the sources do not overlap.",
                    ids[row_id],
                    name,
                    source,
                )
                break
            ids[row_id] = f"{name}/{source}"
    dataset = DatasetDict(merged)
    options = options or LoadOptions()
    if options.find_duplicates:  # a copy in one source's train and another's test leaks just the same: same rule
        dataset = _check_near_duplicates(
            dataset, LoadReport("merged", "cropped"), options, " + ".join(_source_name(d) for d, _ in loaded)
        )
    return dataset, [report for _, report in loaded]


FACE_MODES = ("cropped", "detect")


def parse_source_spec(spec: str, default_split: str) -> tuple[str, str, str | None]:
    """``PATH[:SPLIT[:FACES]]`` -> (path, split, faces or None), as the benchmarks and the calibration
    take sources; a colon not followed by a split name (or a faces mode, ``cropped`` / ``detect``)
    belongs to the path."""
    faces = None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.lower() in FACE_MODES:
        spec, faces = head, tail.lower()
    head, sep, tail = spec.rpartition(":")
    if sep and head and (tail.lower() in SPLIT_ALIASES or tail.lower() == "all"):
        return head, tail, faces
    return spec, default_split, faces


def _source_name(dataset: DatasetDict) -> str:
    split = next(iter(dataset.values()))
    return str(split[0]["source"]) if len(split) and "source" in split.column_names else "data"


def _with_columns(split: Dataset, columns: dict[str, Any]) -> Dataset:
    """``split`` with every column in ``columns`` (missing ones empty), in that order, with those features."""
    for column, feature in columns.items():
        if column not in split.column_names:
            split = split.add_column(column, [None] * len(split), feature=feature)
    split = split.select_columns(list(columns))
    return split.cast(Features(columns)) if split.features != Features(columns) else split


def detect_format(source: str | Path) -> str:
    """Guess the layout of ``source`` from the files it holds; raises DataError when nothing fits."""
    path = Path(source)
    if not path.exists():
        if is_repo_id(str(source)):
            return "hub"
        raise DataError(
            f"{source}: no such file or folder. Give a data folder, a CSV file or a Hub dataset id (org/name)."
        )
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{source} is a file but not a CSV: give the data folder or its labels CSV.")
    if (
        any((path / name).exists() for name in ("dataset_dict.json", "state.json"))
        or list(path.glob("**/*.parquet"))[:1]
    ):
        return "hub"
    if (path / "train").is_dir() and any(path.glob("gt_*.csv")):
        return "appa-real"
    if (path / "final_files").is_dir():
        return "final-files"
    if list(path.glob("*.csv")):
        return "csv"
    names = [p.name for p in _image_files(path)][:50]
    if names and all(UTKFACE_NAME.match(n) or FGNET_NAME.match(n) for n in names):
        return "filenames"
    raise DataError(
        f"{source}: cannot tell the data format. Expected one of: APPA-REAL (train/ valid/ test/ + gt_avg_*.csv), "
        "final_files/ + labels.csv, an image folder + CSV, UTKFace/FG-NET-named images, or a saved dataset. "
        "Pass --data-format to choose."
    )


# --- the loaders -------------------------------------------------------------------------------


def _load_appa_real(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    root = Path(source)
    report = LoadReport("appa-real", faces="cropped")
    if options.target not in ("real", "apparent"):
        raise DataError(f"--target must be 'real' or 'apparent', not {options.target!r}.")
    splits: dict[str, list[dict[str, Any]]] = {}
    for folder, split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        csv_path = root / f"gt_avg_{folder}.csv"
        if not csv_path.exists():
            raise DataError(
                f"{csv_path} is missing: the APPA-REAL release has gt_avg_train.csv, gt_avg_valid.csv and "
                "gt_avg_test.csv."
            )
        frame = _read_csv(csv_path, required=("file_name", "apparent_age_avg", "apparent_age_std", "real_age"))
        rows = []
        for line, record in _numbered(frame):
            image_path = root / folder / f"{record['file_name']}_face.jpg"
            if not image_path.exists():  # fall back to the uncropped image if the crop is absent
                image_path = root / folder / str(record["file_name"])
            real = _parse_age(record["real_age"], csv_path, line, report, options)
            apparent = _parse_age(record["apparent_age_avg"], csv_path, line, report, options)
            if real is None or apparent is None:
                continue
            row = _image_row(image_path, csv_path, line, report, options)
            if row is None:
                continue
            row.update(
                age=real if options.target == "real" else apparent,
                apparent_age_mean=apparent,
                apparent_age_std=float(record["apparent_age_std"]),
                real_age=real,
                source="appa-real",
            )
            rows.append(row)
        _check_duplicates(rows, csv_path)
        splits[split] = rows
    return _to_dataset_dict(splits), report


def _load_final_files(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    root = Path(source)
    csv_path = root / (options.labels_file or "labels.csv")
    if not csv_path.exists():
        raise DataError(
            f"{csv_path} is missing: the final_files layout has labels.csv (file_name,real_age) beside final_files/."
        )
    return _rows_from_csv(
        csv_path,
        root / "final_files",
        "file_name",
        "real_age",
        None,
        LoadReport("final-files", "cropped"),
        options,
        "appa-real",
    )


def _load_csv_folder(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    path = Path(source)
    if path.is_file():
        csv_path, root = path, path.parent
    else:
        root = path
        if options.labels_file:
            csv_path = (
                Path(options.labels_file) if Path(options.labels_file).is_absolute() else root / options.labels_file
            )
        elif (root / "labels.csv").exists():
            csv_path = root / "labels.csv"
        else:
            candidates = sorted(root.glob("*.csv"))
            if len(candidates) != 1:
                raise DataError(f"{root}: found {len(candidates)} CSV files; name the labels file with --labels-file.")
            csv_path = candidates[0]
    image_root = root / "images" if (root / "images").is_dir() else root
    report = LoadReport("csv", faces="cropped")
    return _rows_from_csv(
        csv_path, image_root, options.image_column, options.age_column, options.split_column, report, options, root.name
    )


def _load_filenames(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    root = Path(source)
    files = _image_files(root)
    utk = [f for f in files if UTKFACE_NAME.match(f.name)]
    fgnet = [f for f in files if FGNET_NAME.match(f.name)]
    if not utk and not fgnet:
        raise DataError(
            f"{root}: no UTKFace ({{age}}_{{gender}}_{{race}}_{{date}}.jpg) or FG-NET ({{subject}}A{{age}}.JPG) file "
            "names found."
        )
    # UTKFace chips are crops; FG-NET photos are not, so a mixed or FG-NET folder needs detection.
    report = LoadReport("filenames", faces="detect" if fgnet else "cropped")
    rows, groups = [], []
    for line, path in enumerate(sorted(files), start=1):
        if match := UTKFACE_NAME.match(path.name):
            age, extra, group = float(match.group(1)), {"gender": match.group(2), "race": match.group(3)}, path.name
        elif match := FGNET_NAME.match(path.name):
            age, extra, group = (
                float(match.group(2)),
                {},
                f"fgnet-{match.group(1)}",
            )  # split by subject: no identity leak
        else:
            report.skip("file name does not carry an age", path.name)
            continue
        row = _image_row(path, root, line, report, options)
        if row is None:
            continue
        row.update(age=age, source="fgnet" if group.startswith("fgnet-") else "utkface", **extra)
        rows.append(row)
        groups.append(group)
    _check_duplicates(rows, root)
    return _to_dataset_dict(_stratified_split(rows, options, groups)), report


def _load_hub(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    path = Path(source)
    report = LoadReport("hub", faces="cropped")
    try:
        if path.exists() and any((path / n).exists() for n in ("dataset_dict.json", "state.json")):
            loaded = load_from_disk(str(path))
        else:
            loaded = load_dataset(str(source))
    except Exception as error:  # datasets raises many kinds; one message says what to do
        raise DataError(
            f"Could not load the dataset {source!r}: {error}. Give a local folder, or check the Hub id and your "
            "connection."
        ) from error
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    image_col = _pick_column(loaded, (options.image_column, "image", "img", "file_name"), "image", source)
    age_col = _pick_column(loaded, (options.age_column, "age", "real_age", "label"), "age", source)
    renamed = {}
    for name, split in loaded.items():
        split = split.rename_columns({c: n for c, n in ((image_col, "image"), (age_col, "age")) if c != n})
        split = split.cast_column("image", Image())
        split = split.cast_column("age", Value("float32"))
        if "id" not in split.column_names:
            split = split.add_column("id", _content_ids(split))
        if "source" not in split.column_names:
            split = split.add_column("source", [str(source)] * len(split))
        renamed[SPLIT_ALIASES.get(name.lower(), name)] = split
    dataset = DatasetDict(renamed)
    if set(dataset) == {"train"}:
        rows = dataset["train"]
        groups = [str(g) for g in duplicate_group_ids(rows)] if options.find_duplicates else None
        indices = _split_indices(list(rows["age"]), options, groups)
        dataset = DatasetDict({name: rows.select(idx) for name, idx in indices.items()})
    return dataset, report


# --- helpers -----------------------------------------------------------------------------------


def _rows_from_csv(
    csv_path: Path,
    image_root: Path,
    image_column: str,
    age_column: str,
    split_column: str | None,
    report: LoadReport,
    options: LoadOptions,
    source_name: str,
) -> tuple[DatasetDict, LoadReport]:
    frame = _read_csv(csv_path, required=(image_column, age_column))
    has_split = bool(split_column) and split_column in frame.columns
    extra_columns = [c for c in ("gender", "race", "apparent_age", "apparent_age_std") if c in frame.columns]
    rows, splits = [], []
    for line, record in _numbered(frame):
        age = _parse_age(record[age_column], csv_path, line, report, options)
        if age is None:
            continue
        name = str(record[image_column]).strip()
        image_path = Path(name) if Path(name).is_absolute() else image_root / name
        if not image_path.exists() and (csv_path.parent / name).exists():
            image_path = csv_path.parent / name
        split = None
        if has_split:
            split = SPLIT_ALIASES.get(str(record[split_column]).strip().lower())
            if split is None:
                _bad(
                    f"{csv_path}, row {line}: split {record[split_column]!r} is not train, valid(ation) or test",
                    report,
                    options,
                )
                continue
        row = _image_row(image_path, csv_path, line, report, options)
        if row is None:
            continue
        row.update(age=age, source=source_name, **{c: str(record[c]) for c in extra_columns})
        rows.append(row)
        splits.append(split)
    _check_duplicates(rows, csv_path)
    if has_split:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row, split in zip(rows, splits):
            grouped[split].append(row)
        return _to_dataset_dict(grouped), report
    return _to_dataset_dict(_stratified_split(rows, options)), report


def _read_csv(csv_path: Path, required: Iterable[str]) -> pd.DataFrame:
    if not csv_path.exists():
        raise DataError(f"{csv_path}: no such file.")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{csv_path} is empty: it needs a header row and one row per image.") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{csv_path} is not a readable CSV: {error}") from error
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{csv_path} has no column {', '.join(repr(m) for m in missing)} (it has: {', '.join(frame.columns)}). "
            "Name the right columns with --image-column / --age-column."
        )
    if frame.empty:
        raise DataError(f"{csv_path} has a header but no rows.")
    return frame


def _numbered(frame: pd.DataFrame) -> Iterable[tuple[int, dict[str, Any]]]:
    """Rows with the line number a person sees in an editor (the header is line 1)."""
    for index, record in enumerate(frame.to_dict("records")):
        yield index + 2, record


def _bad(message: str, report: LoadReport, options: LoadOptions) -> None:
    if options.on_bad_rows == "skip":
        report.skip(message.split(": ", 1)[-1].split(" (")[0], message)
        return
    raise DataError(message + " Fix the row, or pass --on-bad-rows skip to leave such rows out.")


def _parse_age(value: Any, csv_path: Path, line: int, report: LoadReport, options: LoadOptions) -> float | None:
    try:
        age = float(str(value).strip())
    except ValueError:
        _bad(f"{csv_path}, row {line}: age {value!r} is not a number", report, options)
        return None
    if not in_age_range(age):
        _bad(f"{csv_path}, row {line}: age {age:g} is outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}", report, options)
        return None
    return age


def _image_row(
    image_path: Path, where: Path, line: int, report: LoadReport, options: LoadOptions
) -> dict[str, Any] | None:
    """The image's path and content hash, after checking that it is a readable image."""
    if not image_path.is_file():
        _bad(f"{where}, row {line}: image {image_path} does not exist", report, options)
        return None
    data = image_path.read_bytes()
    if options.verify_images:
        try:
            with PILImage.open(io.BytesIO(data)) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            _bad(f"{where}, row {line}: image {image_path} cannot be read ({error})", report, options)
            return None
    return {"image": str(image_path), "id": hashlib.sha256(data).hexdigest(), "file": image_path.name}


def _check_duplicates(rows: list[dict[str, Any]], where: Path) -> None:
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        key = row["image"]
        if key in seen:
            raise DataError(
                f"{where}: {row['file']} is listed twice (rows {seen[key] + 2} and {index + 2}). Keep one row per "
                "image."
            )
        seen[key] = index


def _split_indices(ages: list[float], options: LoadOptions, groups: list[str] | None) -> dict[str, list[int]]:
    """A seeded split stratified by age decade; the rows of one group (a person, a near-duplicate group) stay
    in one split."""
    rng = random.Random(options.split_seed)
    units: dict[str, list[int]] = defaultdict(list)
    for index in range(len(ages)):
        units[groups[index] if groups else str(index)].append(index)
    strata: dict[int, list[str]] = defaultdict(list)
    for unit, members in units.items():
        decade = min(int(sum(ages[i] for i in members) / len(members)) // 10, 9)
        strata[decade].append(unit)
    result: dict[str, list[int]] = {name: [] for name in SPLITS}
    train_f, valid_f, _ = options.split_fractions
    for decade in sorted(strata):
        unit_names = sorted(strata[decade])
        rng.shuffle(unit_names)
        n = len(unit_names)
        n_train = max(1, round(n * train_f)) if n >= 3 else n
        n_valid = round(n * valid_f) if n >= 3 else 0
        for position, unit in enumerate(unit_names):
            split = "train" if position < n_train else "validation" if position < n_train + n_valid else "test"
            result[split].extend(units[unit])
    return {name: sorted(indices) for name, indices in result.items()}


def _stratified_split(
    rows: list[dict[str, Any]], options: LoadOptions, groups: list[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    if options.find_duplicates and rows:
        groups = _merge_groups(groups, duplicate_group_ids(rows))
    indices = _split_indices([row["age"] for row in rows], options, groups)
    return {name: [rows[i] for i in idx] for name, idx in indices.items()}


def _to_dataset_dict(splits: dict[str, list[dict[str, Any]]]) -> DatasetDict:
    out = {}
    for name in SPLITS:
        rows = splits.get(name, [])
        if not rows:
            continue
        columns = {key: [row.get(key) for row in rows] for key in rows[0]}
        dataset = Dataset.from_dict(columns).cast_column("image", Image()).cast_column("age", Value("float32"))
        out[name] = dataset
    return DatasetDict(out)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pick_column(dataset: DatasetDict, candidates: Iterable[str], role: str, source: str | Path) -> str:
    columns = next(iter(dataset.values())).column_names
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"{source}: no {role} column among {columns}. Name it with --{role}-column.")


def _content_ids(split: Dataset) -> list[str]:
    """sha256 of each image's stored bytes (embedded, or the file a path names): the same id the
    feedback store gives the same image, so corrections match rows of any source."""
    raw = split.cast_column("image", Image(decode=False))["image"]
    return [
        hashlib.sha256(item["bytes"] if item.get("bytes") else Path(item["path"]).read_bytes()).hexdigest()
        for item in raw
    ]


# --- near-duplicates ---------------------------------------------------------------------------
#
# A row's image may be a path (str or Path), raw bytes, a datasets Image dict ({"bytes", "path"}) or a
# PIL image. Its content id is the sha256 of its stored bytes (the `id` column when there is one).

_DHASH_MEMO: dict[str, int] = {}  # content id -> dHash, for this process
_DISK_CACHES_READ: set[str] = set()


def dhash(image: Any) -> int:
    """The 64-bit difference hash of an image: greyscale (Pillow's ``convert("L")``), resized to 9x8 with
    BILINEAR, one bit per pair of horizontal neighbours (1 where the right pixel is brighter), row by row,
    first bit highest (imagehash's ``dhash`` bit order). Re-encoding or a mild colour shift leaves it unchanged; a
    different photo nearly always changes it, but aligned face crops do collide now and then (``fine_dhash``)."""
    if isinstance(image, PILImage.Image):
        grey = image.convert("L")
    else:
        with PILImage.open(io.BytesIO(_image_bytes(image))) as opened:
            grey = opened.convert("L")
    pixels = np.asarray(grey.resize((9, 8), PILImage.Resampling.BILINEAR), dtype=np.int16)
    return int.from_bytes(np.packbits((pixels[:, 1:] > pixels[:, :-1]).ravel()).tobytes(), "big")


def fine_dhash(image: Any, size: int = 16) -> int:
    """The same difference hash on a (size+1) x size thumbnail: size*size bits (256 by default), to confirm
    that a group's members are one photo (``SAME_PHOTO_DISTANCE``)."""
    with PILImage.open(io.BytesIO(_image_bytes(image))) as opened:
        grey = opened.convert("L")
    pixels = np.asarray(grey.resize((size + 1, size), PILImage.Resampling.BILINEAR), dtype=np.int16)
    return int.from_bytes(np.packbits((pixels[:, 1:] > pixels[:, :-1]).ravel()).tobytes(), "big")


_FINE_MEMO: dict[str, int] = {}  # content id -> 256-bit dHash, for this process


def _photo_distances(images: list[Any], ids: list[str]) -> list[list[int]]:
    """Pairwise bit distances of the images' 256-bit dHashes."""
    fine = []
    for image, content_id in zip(images, ids):
        if content_id not in _FINE_MEMO:
            _FINE_MEMO[content_id] = fine_dhash(image)
        fine.append(_FINE_MEMO[content_id])
    return [[(a ^ b).bit_count() for b in fine] for a in fine]


def dhash_cache_path() -> Path | None:
    """Where dHashes are kept between runs, keyed by content id: ``$AGECHECK_CACHE_DIR`` (empty: no disk
    cache), else ``$XDG_CACHE_HOME/agecheck`` or ``~/.cache/agecheck``; never inside the repository."""
    folder = os.environ.get("AGECHECK_CACHE_DIR")
    if folder is None:
        folder = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agecheck")
    return Path(folder) / f"{DHASH_VERSION}.json" if folder else None


def dhashes(images: list[Any], ids: list[str | None] | None = None, cache: bool = True) -> tuple[list[str], list[int]]:
    """Content ids and dHashes of ``images``; ``ids`` (sha256 of the bytes, e.g. the `id` column) saves
    reading images whose hash is cached. Returns (ids, hashes), computing the ids that were not given.
    ``cache=False`` skips the disk cache (``dhash_cache_path``); hashes are always remembered in-process."""
    path = dhash_cache_path() if cache else None
    if path is not None and str(path) not in _DISK_CACHES_READ:
        _DISK_CACHES_READ.add(str(path))
        _DHASH_MEMO.update(_read_dhash_cache(path))
    ids = list(ids) if ids is not None else [None] * len(images)
    hashes: list[int] = []
    new = 0
    for index, image in enumerate(images):
        content_id = ids[index]
        if content_id is not None and content_id in _DHASH_MEMO:
            hashes.append(_DHASH_MEMO[content_id])
            continue
        data = _image_bytes(image) if not isinstance(image, PILImage.Image) else None
        if content_id is None:
            if data is None:
                raise DataError("A PIL image has no content id: pass its id, or the file or bytes instead.")
            content_id = ids[index] = hashlib.sha256(data).hexdigest()
        if content_id not in _DHASH_MEMO:
            _DHASH_MEMO[content_id] = dhash(image if data is None else data)
            new += 1
        hashes.append(_DHASH_MEMO[content_id])
    if new and path is not None:
        _write_dhash_cache(path, {i: _DHASH_MEMO[i] for i in ids})
    return [str(i) for i in ids], hashes


def _read_dhash_cache(path: Path) -> dict[str, int]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return (
            {k: int(v, 16) for k, v in stored.get("hashes", {}).items()}
            if stored.get("version") == DHASH_VERSION
            else {}
        )
    except (OSError, ValueError, AttributeError):
        return {}


def _write_dhash_cache(path: Path, entries: dict[str, int]) -> None:
    """Merge ``entries`` into the cache file (written whole to a temporary file, then renamed into place)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read_dhash_cache(path), **entries}
        text = json.dumps({"version": DHASH_VERSION, "hashes": {k: f"{v:016x}" for k, v in sorted(merged.items())}})
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as handle:
            handle.write(text)
        os.replace(handle.name, path)
    except OSError as error:  # a read-only home only costs the next run the hashing time
        logger.debug("Could not write the dHash cache %s: %s", path, error)


def _image_bytes(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, dict):
        return image["bytes"] if image.get("bytes") else Path(image["path"]).read_bytes()
    return Path(image).read_bytes()


def _rows_of(data: ImageRows) -> tuple[list[Any], list[str | None] | None]:
    """The image references and content ids of a Dataset, a list of row dicts, or a list of images."""
    if isinstance(data, Dataset):  # through arrow: no image decoding, and 100x faster than iterating a column
        return _column(data, "image"), _column(data, "id") if "id" in data.column_names else None
    rows = list(data)
    if rows and isinstance(rows[0], dict) and "image" in rows[0]:
        return [row["image"] for row in rows], [row.get("id") for row in rows]
    return rows, None


def _column(split: Dataset, key: str) -> list[Any]:
    return split.with_format("arrow")[key].to_pylist()


def _union(n: int, keyings: Iterable[Iterable[Any]]) -> list[int]:
    """Union-find: rows sharing a key in any keying are one group; each row gets its group's smallest index."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in keyings:
        first: dict[Any, int] = {}
        for index, key in enumerate(keys):
            if key is None:
                continue
            if key in first:
                a, b = find(first[key]), find(index)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[key] = index
    return [find(i) for i in range(n)]


def duplicate_group_ids(data: ImageRows, cache: bool = True) -> list[int]:
    """Per row, its near-duplicate group: the smallest row index of the rows with the same content id
    (sha256) or the same dHash. ``data``: a Dataset, a list of row dicts with `image` (and `id`), or images."""
    images, ids = _rows_of(data)
    ids, hashes = dhashes(images, ids, cache=cache)
    return _union(len(images), (ids, hashes))


def near_duplicate_groups(data: ImageRows, min_size: int = 2, cache: bool = True) -> list[list[int]]:
    """Near-duplicate groups of ``data`` as lists of row indices (see ``duplicate_group_ids``), in order of
    their first row; only groups of at least ``min_size`` rows (1: every row)."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(duplicate_group_ids(data, cache=cache)):
        members[group].append(index)
    return [rows for _, rows in sorted(members.items()) if len(rows) >= min_size]


def _merge_groups(groups: list[str] | None, duplicate_ids: list[int]) -> list[str]:
    """Person groups (or none) joined with near-duplicate groups: one label per row for ``_split_indices``.
    Without duplicates the labels are the ones it got before (the person, or the row index)."""
    roots = _union(len(duplicate_ids), ([groups] if groups else []) + [duplicate_ids])
    return [groups[root] if groups else str(root) for root in roots]


def _split_table(
    data: DatasetDict | Dataset | Sequence[Mapping[str, Any]],
) -> tuple[list[Any], list[str | None], list[float], list[str | None], list[str], list[str | None]]:
    """images, ids, ages, splits, files and sources of a DatasetDict (splits in train/validation/test order),
    a Dataset or a list of row dicts (split from a `split` key or column)."""
    if isinstance(data, DatasetDict):
        parts = [
            (name, data[name]) for name in sorted(data, key=lambda n: SPLITS.index(n) if n in SPLITS else len(SPLITS))
        ]
    else:
        parts = [(None, data)]
    images, ids, ages, splits, files, sources = [], [], [], [], [], []
    for name, part in parts:
        part_images, part_ids = _rows_of(part)
        columns = part.column_names if isinstance(part, Dataset) else None

        def column(key: str, part=part, columns=columns) -> list[Any]:
            if columns is not None:
                return _column(part, key) if key in columns else [None] * len(part)
            return [row.get(key) if isinstance(row, dict) else None for row in part]

        images += part_images
        ids += part_ids or [None] * len(part_images)
        ages += [None if a is None else float(a) for a in column("age")]
        splits += [name] * len(part_images) if name else column("split")
        part_files = column("file")
        files += [f or _file_name(image) for f, image in zip(part_files, part_images)]
        sources += column("source")
    return images, ids, ages, splits, files, sources


def _file_name(image: Any) -> str:
    if isinstance(image, dict):
        return Path(image.get("path") or "").name
    return Path(image).name if isinstance(image, (str, Path)) else ""


def _grouped(data: ImageRows, cache: bool = True) -> tuple[dict[str, list[Any]], list[list[int]]]:
    images, ids, ages, splits, files, sources = _split_table(data)
    ids, hashes = dhashes(images, ids, cache=cache)
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(_union(len(images), (ids, hashes))):
        members[group].append(index)
    table = {
        "id": ids,
        "age": ages,
        "split": splits,
        "file": files,
        "source": sources,
        "dhash": hashes,
        "image": images,
    }
    return table, [rows for _, rows in sorted(members.items()) if len(rows) > 1]


def _spread(ages: list[float | None]) -> float:
    known = [a for a in ages if a is not None]
    return max(known) - min(known) if known else 0.0


def duplicate_summary(data: Any, tolerance: float = CONFLICT_TOLERANCE, cache: bool = True) -> dict[str, Any]:
    """Counts for a report or a card: near-duplicate groups and their rows, byte-identical groups, groups
    with conflicting ages (spread > ``tolerance``; also with any difference) and how many of those a
    256-bit dHash confirms as one photo, groups it does not confirm at all, groups crossing splits, and
    the ages of the widest confirmed conflict."""
    table, groups = _grouped(data, cache=cache)
    id_counts = defaultdict(int)
    for content_id in table["id"]:
        id_counts[content_id] += 1
    spreads = [_spread([table["age"][i] for i in rows]) for rows in groups]
    one_photo = [_same_photo(table, rows) for rows in groups]
    confirmed = {g for g in range(len(groups)) if spreads[g] > tolerance and one_photo[g]}
    widest = max(confirmed, key=lambda g: (spreads[g], -g), default=None)
    return {
        "rows": len(table["id"]),
        "groups": len(groups),
        "files": sum(len(rows) for rows in groups),
        "identical_groups": sum(1 for n in id_counts.values() if n > 1),
        "largest": max((len(rows) for rows in groups), default=0),
        "unconfirmed": sum(1 for same in one_photo if not same),  # groups a 256-bit dHash splits: colliding faces
        "tolerance": tolerance,
        "conflicting": sum(1 for s in spreads if s > tolerance),
        "conflicting_any": sum(1 for s in spreads if s > 0),
        "conflicting_same_photo": len(confirmed),
        "widest_ages": sorted({table["age"][i] for i in groups[widest]}) if widest is not None else [],
        "cross_split": sum(1 for rows in groups if len({table["split"][i] for i in rows}) > 1),
    }


def _same_photo(table: dict[str, list[Any]], rows: list[int]) -> bool:
    distances = _photo_distances([table["image"][i] for i in rows], [table["id"][i] for i in rows])
    return max(max(row) for row in distances) <= SAME_PHOTO_DISTANCE


def conflicting_groups(data: Any, tolerance: float = CONFLICT_TOLERANCE, cache: bool = True) -> list[dict[str, Any]]:
    """Near-duplicate groups whose ages differ by more than ``tolerance`` years: the labels an annotator
    should settle. ``data``: a DatasetDict (all splits), a Dataset or a list of row dicts. One dict per
    group: group (1, 2, ...), size, age_min, age_max, age_spread, max_distance and same_photo (the largest
    256-bit dHash distance between two members, and whether it is within ``SAME_PHOTO_DISTANCE``: if not,
    the group likely joins different faces whose 64-bit hashes collide), and per row ids, files, ages,
    splits, sources, distances (to the group's first row). Confirmed photos first, widest spread first."""
    table, groups = _grouped(data, cache=cache)
    found = []
    for rows in groups:
        ages = [table["age"][i] for i in rows]
        if _spread(ages) > tolerance:
            known = [a for a in ages if a is not None]
            distances = _photo_distances([table["image"][i] for i in rows], [table["id"][i] for i in rows])
            max_distance = max(max(row) for row in distances)
            found.append(
                {
                    "size": len(rows),
                    "age_min": min(known),
                    "age_max": max(known),
                    "age_spread": max(known) - min(known),
                    "max_distance": max_distance,
                    "same_photo": max_distance <= SAME_PHOTO_DISTANCE,
                    "ids": [table["id"][i] for i in rows],
                    "files": [table["file"][i] for i in rows],
                    "ages": ages,
                    "splits": [table["split"][i] for i in rows],
                    "sources": [table["source"][i] for i in rows],
                    "distances": distances[0],
                }
            )
    found.sort(key=lambda g: (not g["same_photo"], -g["age_spread"], g["files"][0]))
    return [{"group": number, **group} for number, group in enumerate(found, start=1)]


CONFLICT_COLUMNS = ("group", "same_photo", "age_spread", "file", "id", "age", "split", "source", "distance")


def write_conflicts_csv(groups: list[dict[str, Any]], out: Any) -> int:
    """``conflicting_groups`` as a CSV, one row per image (a path, or an open text file); returns the rows written."""
    handle = open(out, "w", newline="", encoding="utf-8") if isinstance(out, (str, Path)) else out
    try:
        writer = csv.writer(handle)
        writer.writerow(CONFLICT_COLUMNS)
        written = 0
        for group in groups:
            for content_id, file, age, split, source, distance in zip(
                group["ids"], group["files"], group["ages"], group["splits"], group["sources"], group["distances"]
            ):
                writer.writerow(
                    [
                        group["group"],
                        "yes" if group["same_photo"] else "no",
                        f"{group['age_spread']:g}",
                        file,
                        content_id,
                        "" if age is None else f"{age:g}",
                        split or "",
                        source or "",
                        distance,
                    ]
                )
                written += 1
        return written
    finally:
        if handle is not out:
            handle.close()


def _check_near_duplicates(
    dataset: DatasetDict, report: LoadReport, options: LoadOptions, source: str | Path
) -> DatasetDict:
    """Count near-duplicate groups into ``report``; drop the validation/test copies of groups that cross
    a given split (the earliest split, train first, keeps its copies)."""
    if options.cross_split_duplicates not in ("drop", "keep"):
        raise DataError(f"cross_split_duplicates must be 'drop' or 'keep', not {options.cross_split_duplicates!r}.")
    order = sorted(dataset, key=lambda n: SPLITS.index(n) if n in SPLITS else len(SPLITS))
    table, groups = _grouped(DatasetDict({name: dataset[name] for name in order}))
    offsets, start = {}, 0
    for name in order:
        offsets[name], start = start, start + len(dataset[name])
    report.duplicate_groups = len(groups)
    report.duplicate_files = sum(len(rows) for rows in groups)
    report.conflicting_groups = sum(
        1 for rows in groups if _spread([table["age"][i] for i in rows]) > CONFLICT_TOLERANCE
    )
    drop: dict[str, set[int]] = defaultdict(set)
    crossing = 0
    for rows in groups:
        splits = [table["split"][i] for i in rows]
        if len(set(splits)) > 1:
            crossing += 1
            keep = min(splits, key=order.index)
            for i, split in zip(rows, splits):
                if split != keep:
                    drop[split].add(i - offsets[split])
    report.cross_split_groups = crossing
    report.cross_split_dropped = sum(len(v) for v in drop.values()) if options.cross_split_duplicates == "drop" else 0
    if crossing:
        where = ", ".join(f"{len(drop[name])} from {name}" for name in order if drop[name])
        action = (
            f"dropped {where}, keeping the earlier copy"
            if options.cross_split_duplicates == "drop"
            else f"kept them ({where} would be dropped)"
        )
        logger.warning(
            "%s: %d near-duplicate groups (same image, or same difference hash) cross the given split: %s.",
            source,
            crossing,
            action,
        )
    if options.cross_split_duplicates == "drop" and drop:
        dataset = DatasetDict(
            {
                name: split.select([i for i in range(len(split)) if i not in drop[name]]) if drop[name] else split
                for name, split in dataset.items()
            }
        )
    return dataset


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m age_model.data conflicts SOURCE --out conflicts.csv``: the near-duplicate groups with
    conflicting ages, one row per image, for the annotators; prints the duplicate counts."""
    parser = argparse.ArgumentParser(prog="python -m age_model.data", description="Check an age data source.")
    commands = parser.add_subparsers(dest="command", required=True)
    conflicts = commands.add_parser("conflicts", help="near-duplicate groups whose ages disagree, as CSV")
    conflicts.add_argument("source", help="data folder, labels CSV or saved dataset (as train.py --data)")
    conflicts.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    conflicts.add_argument(
        "--tolerance",
        type=float,
        default=CONFLICT_TOLERANCE,
        help=f"ages further apart than this many years conflict (default {CONFLICT_TOLERANCE:g})",
    )
    conflicts.add_argument("--data-format", default="auto", choices=("auto", *FORMATS))
    conflicts.add_argument("--labels-file")
    conflicts.add_argument("--on-bad-rows", default="error", choices=("error", "skip"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    options = LoadOptions(
        data_format=args.data_format,
        labels_file=args.labels_file,
        on_bad_rows=args.on_bad_rows,
        cross_split_duplicates="keep",
    )  # list every copy, also those training would drop
    try:
        dataset, _ = load_age_dataset(args.source, options)
    except DataError as error:
        print(error, file=sys.stderr)
        return 1
    summary = duplicate_summary(dataset, args.tolerance)
    groups = conflicting_groups(dataset, args.tolerance)
    written = write_conflicts_csv(groups, args.out if args.out else sys.stdout)
    print(
        f"{args.source}: {summary['rows']:,} rows; {summary['groups']:,} near-duplicate groups hold "
        f"{summary['files']:,} rows "
        f"({summary['identical_groups']:,} byte-identical groups, {summary['cross_split']:,} crossing splits); "
        f"{len(groups):,} groups have ages more than {args.tolerance:g} years apart ({summary['conflicting_any']:,} "
        "differ at all), "
        f"{summary['conflicting_same_photo']:,} of them confirmed as one photo by a 256-bit dHash"
        + (f"; wrote {written:,} rows to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


__all__ = [
    "DataError",
    "LoadOptions",
    "LoadReport",
    "load_age_dataset",
    "load_age_datasets",
    "detect_format",
    "FORMATS",
    "dhash",
    "dhashes",
    "near_duplicate_groups",
    "duplicate_group_ids",
    "conflicting_groups",
    "write_conflicts_csv",
    "duplicate_summary",
    "fine_dhash",
    "CONFLICT_TOLERANCE",
    "SAME_PHOTO_DISTANCE",
]


if __name__ == "__main__":
    sys.exit(main())
