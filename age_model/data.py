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
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from datasets import Dataset, DatasetDict, Features, Image, Value, concatenate_datasets, load_dataset, load_from_disk
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

logger = logging.getLogger(__name__)

FORMATS = ("appa-real", "final-files", "csv", "filenames", "hub")
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "validation", "val": "validation",
                 "validation": "validation", "dev": "validation", "test": "test", "testing": "test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
UTKFACE_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})[a-z]?\.jpe?g$", re.IGNORECASE)
MAX_AGE = 120


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


@dataclass
class LoadReport:
    """What loading found: the format, whether images are face crops, and what was skipped and why."""

    data_format: str
    faces: str  # "cropped" (ready-made face crops) or "detect" (photos: faces must be found and cropped)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_examples) < 10:
            self.skipped_examples.append(detail)


def load_age_dataset(source: str | Path, options: LoadOptions | None = None) -> tuple[DatasetDict, LoadReport]:
    """Read ``source`` (a folder, CSV file, save_to_disk folder or Hub id) into train/validation/test."""
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
    for reason, count in report.skipped.items():
        logger.warning("Skipped %d rows: %s (e.g. %s)", count, reason, "; ".join(report.skipped_examples[:3]))
    empty = [name for name in SPLITS if name not in dataset or len(dataset[name]) == 0]
    if "train" in empty:
        raise DataError(f"{source}: no usable training rows were found. Check the path, --data-format and column names.")
    return dataset, report


def load_age_datasets(sources: Iterable[str | Path], options: LoadOptions | None = None) -> tuple[DatasetDict, list[LoadReport]]:
    """Several sources in one DatasetDict: each split is the concatenation of the sources' splits.

    Every row keeps its ``source`` (the loader's name for it, e.g. ``utkface``, ``aaf``); columns one
    source lacks (``race``, ``apparent_age_mean``, ...) are empty for its rows. Two sources with the
    same name get ``#2``, ``#3`` suffixes so per-source metrics stay apart.
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
        parts = [_with_columns(dataset[name], columns) for dataset, _ in loaded if name in dataset and len(dataset[name])]
        if parts:
            merged[name] = concatenate_datasets(parts)
    ids: dict[str, str] = {}
    for name, split in merged.items():  # the same image in two sources, or in two splits, is a leak
        for row_id, source in zip(split["id"], split["source"]):
            if row_id in ids and ids[row_id] != f"{name}/{source}":
                logger.warning("The same image is in %s and %s/%s: check that the sources do not overlap.", ids[row_id], name, source)
                break
            ids[row_id] = f"{name}/{source}"
    return DatasetDict(merged), [report for _, report in loaded]


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
    """Guess the layout of ``source`` from the files it holds."""
    path = Path(source)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
            return "hub"
        raise DataError(f"{source}: no such file or folder. Give a data folder, a CSV file or a Hub dataset id (org/name).")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise DataError(f"{source} is a file but not a CSV: give the data folder or its labels CSV.")
    if any((path / name).exists() for name in ("dataset_dict.json", "state.json")) or list(path.glob("**/*.parquet"))[:1]:
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
            raise DataError(f"{csv_path} is missing: the APPA-REAL release has gt_avg_train.csv, gt_avg_valid.csv and gt_avg_test.csv.")
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
            row.update(age=real if options.target == "real" else apparent, apparent_age_mean=apparent,
                       apparent_age_std=float(record["apparent_age_std"]), real_age=real, source="appa-real")
            rows.append(row)
        _check_duplicates(rows, csv_path)
        splits[split] = rows
    return _to_dataset_dict(splits), report


def _load_final_files(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    root = Path(source)
    csv_path = root / (options.labels_file or "labels.csv")
    if not csv_path.exists():
        raise DataError(f"{csv_path} is missing: the final_files layout has labels.csv (file_name,real_age) beside final_files/.")
    return _rows_from_csv(csv_path, root / "final_files", "file_name", "real_age", None, LoadReport("final-files", "cropped"), options, "appa-real")


def _load_csv_folder(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    path = Path(source)
    if path.is_file():
        csv_path, root = path, path.parent
    else:
        root = path
        if options.labels_file:
            csv_path = Path(options.labels_file) if Path(options.labels_file).is_absolute() else root / options.labels_file
        elif (root / "labels.csv").exists():
            csv_path = root / "labels.csv"
        else:
            candidates = sorted(root.glob("*.csv"))
            if len(candidates) != 1:
                raise DataError(f"{root}: found {len(candidates)} CSV files; name the labels file with --labels-file.")
            csv_path = candidates[0]
    image_root = root / "images" if (root / "images").is_dir() else root
    report = LoadReport("csv", faces="cropped")
    return _rows_from_csv(csv_path, image_root, options.image_column, options.age_column, options.split_column, report, options, root.name)


def _load_filenames(source: str | Path, options: LoadOptions) -> tuple[DatasetDict, LoadReport]:
    root = Path(source)
    files = _image_files(root)
    utk = [f for f in files if UTKFACE_NAME.match(f.name)]
    fgnet = [f for f in files if FGNET_NAME.match(f.name)]
    if not utk and not fgnet:
        raise DataError(f"{root}: no UTKFace ({{age}}_{{gender}}_{{race}}_{{date}}.jpg) or FG-NET ({{subject}}A{{age}}.JPG) file names found.")
    # UTKFace chips are crops; FG-NET photos are not, so a mixed or FG-NET folder needs detection.
    report = LoadReport("filenames", faces="detect" if fgnet else "cropped")
    rows, groups = [], []
    for line, path in enumerate(sorted(files), start=1):
        if (match := UTKFACE_NAME.match(path.name)):
            age, extra, group = float(match.group(1)), {"gender": match.group(2), "race": match.group(3)}, path.name
        elif (match := FGNET_NAME.match(path.name)):
            age, extra, group = float(match.group(2)), {}, f"fgnet-{match.group(1)}"  # split by subject: no identity leak
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
        raise DataError(f"Could not load the dataset {source!r}: {error}. Give a local folder, or check the Hub id and your connection.") from error
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
        indices = _split_indices(list(rows["age"]), options, None)
        dataset = DatasetDict({name: rows.select(idx) for name, idx in indices.items()})
    return dataset, report


# --- helpers -----------------------------------------------------------------------------------


def _rows_from_csv(csv_path: Path, image_root: Path, image_column: str, age_column: str, split_column: str | None,
                   report: LoadReport, options: LoadOptions, source_name: str) -> tuple[DatasetDict, LoadReport]:
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
                _bad(f"{csv_path}, row {line}: split {record[split_column]!r} is not train, valid(ation) or test", report, options)
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
    if not 0 <= age <= MAX_AGE or age != age:
        _bad(f"{csv_path}, row {line}: age {age:g} is outside 0-{MAX_AGE}", report, options)
        return None
    return age


def _image_row(image_path: Path, where: Path, line: int, report: LoadReport, options: LoadOptions) -> dict[str, Any] | None:
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
            raise DataError(f"{where}: {row['file']} is listed twice (rows {seen[key] + 2} and {index + 2}). Keep one row per image.")
        seen[key] = index


def _split_indices(ages: list[float], options: LoadOptions, groups: list[str] | None) -> dict[str, list[int]]:
    """A seeded split stratified by age decade; rows of one group (a person) stay in one split."""
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


def _stratified_split(rows: list[dict[str, Any]], options: LoadOptions, groups: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
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


def _pick_column(dataset: DatasetDict, candidates: Iterable[str], role: str, source: Any) -> str:
    columns = next(iter(dataset.values())).column_names
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"{source}: no {role} column among {columns}. Name it with --{role}-column.")


def _content_ids(split: Dataset) -> list[str]:
    """sha256 of each image's stored bytes (embedded, or the file a path names): the same id the
    feedback store gives the same image, so corrections match rows of any source."""
    raw = split.cast_column("image", Image(decode=False))["image"]
    return [hashlib.sha256(item["bytes"] if item.get("bytes") else Path(item["path"]).read_bytes()).hexdigest() for item in raw]


__all__ = ["DataError", "LoadOptions", "LoadReport", "load_age_dataset", "load_age_datasets", "detect_format", "FORMATS"]
