"""Every data source the loader recognises, built as small trees from the fixture images, and bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict, Image

from age_model.data import DataError, LoadOptions, detect_format, load_age_dataset


@pytest.fixture()
def fixture_rows(fixture_dir: Path) -> list[dict]:
    return pd.read_csv(fixture_dir / "labels.csv").to_dict("records")


def _copy(fixture_dir: Path, name: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixture_dir / "images" / name, target)


def test_appa_real_official_release(tmp_path, fixture_dir, fixture_rows):
    root = tmp_path / "appa-real-release"
    for folder, rows in (("train", fixture_rows[:8]), ("valid", fixture_rows[8:12]), ("test", fixture_rows[12:])):
        records = []
        for i, row in enumerate(rows):
            name = f"{folder}{i:04d}.jpg"
            _copy(fixture_dir, row["file_name"], root / folder / f"{name}_face.jpg")
            records.append({"file_name": name, "num_ratings": 38, "apparent_age_avg": row["real_age"] + 1.5,
                            "apparent_age_std": 3.0, "real_age": row["real_age"]})
        pd.DataFrame(records).to_csv(root / f"gt_avg_{folder}.csv", index=False)
    assert detect_format(root) == "appa-real"
    real, report = load_age_dataset(root)
    assert report.faces == "cropped"
    assert {name: len(split) for name, split in real.items()} == {"train": 8, "validation": 4, "test": 4}
    assert real["train"][0]["age"] == fixture_rows[0]["real_age"]
    assert real["train"][0]["apparent_age_mean"] == pytest.approx(fixture_rows[0]["real_age"] + 1.5)
    apparent, _ = load_age_dataset(root, LoadOptions(target="apparent"))
    assert apparent["train"][0]["age"] == pytest.approx(fixture_rows[0]["real_age"] + 1.5)
    assert real["train"][0]["image"].size[0] > 0


def test_final_files_variant_gets_a_seeded_stratified_split(tmp_path, fixture_dir, fixture_rows):
    root = tmp_path / "faces"
    for row in fixture_rows:
        _copy(fixture_dir, row["file_name"], root / "final_files" / row["file_name"])
    pd.DataFrame([{"file_name": r["file_name"], "real_age": r["real_age"]} for r in fixture_rows]).to_csv(root / "labels.csv", index=False)
    assert detect_format(root) == "final-files"
    first, _ = load_age_dataset(root)
    second, _ = load_age_dataset(root)
    assert sum(len(s) for s in first.values()) == 16
    assert first["train"]["id"] == second["train"]["id"]  # seeded: the same split every time
    other, _ = load_age_dataset(root, LoadOptions(split_seed=7))
    assert set(other["train"]["id"]) != set(first["train"]["id"]) or len(first["train"]) == 16


def test_csv_folder_with_split_column_and_custom_columns(tmp_path, fixture_dir, fixture_rows):
    root = tmp_path / "custom"
    records = []
    for i, row in enumerate(fixture_rows):
        _copy(fixture_dir, row["file_name"], root / "pics" / row["file_name"])
        records.append({"path": f"pics/{row['file_name']}", "years": row["real_age"], "part": ["train", "valid", "test", "train"][i % 4]})
    pd.DataFrame(records).to_csv(root / "ages.csv", index=False)
    data, report = load_age_dataset(root, LoadOptions(image_column="path", age_column="years", split_column="part"))
    assert report.data_format == "csv"
    assert {name: len(split) for name, split in data.items()} == {"train": 8, "validation": 4, "test": 4}


def test_shared_fixture_loads_as_csv_folder(fixture_dir):
    data, report = load_age_dataset(fixture_dir)
    assert report.data_format == "csv" and sum(len(s) for s in data.values()) == 16
    assert len(set(data["train"]["id"])) == len(data["train"])  # ids are content hashes, unique here


def test_utkface_and_fgnet_file_names(tmp_path, fixture_dir):
    root = tmp_path / "named"
    for name in sorted((fixture_dir / "images").iterdir()):
        _copy(fixture_dir, name.name, root / name.name.split("_", 1)[1])
    assert detect_format(root) == "filenames"
    data, report = load_age_dataset(root)
    assert report.faces == "detect"  # FG-NET photos are uncropped
    ages = sorted(a for split in data.values() for a in split["age"])
    assert ages == sorted([1, 8, 24, 36, 52, 67, 80, 90, 29, 61, 69, 1, 12, 5, 43, 18])


def test_utkface_only_names_are_crops(tmp_path, fixture_dir):
    root = tmp_path / "utk"
    for name in (fixture_dir / "images").glob("utk_*"):
        _copy(fixture_dir, name.name, root / name.name[4:])
    data, report = load_age_dataset(root)
    assert report.faces == "cropped"
    assert set(data["train"]["gender"]) <= {"0", "1"}


def test_saved_dataset_and_parquet_folder(tmp_path, fixture_dir, fixture_rows):
    paths = [str(fixture_dir / "images" / r["file_name"]) for r in fixture_rows]
    dataset = Dataset.from_dict({"image": paths, "age": [float(r["real_age"]) for r in fixture_rows]}).cast_column("image", Image())
    DatasetDict({"train": dataset.select(range(10)), "validation": dataset.select(range(10, 13)),
                 "test": dataset.select(range(13, 16))}).save_to_disk(tmp_path / "saved")
    loaded, report = load_age_dataset(tmp_path / "saved")
    assert report.data_format == "hub" and len(loaded["validation"]) == 3
    # ids are the sha256 of the image bytes, as the feedback store computes them for the same file
    import hashlib

    assert loaded["train"][0]["id"] == hashlib.sha256(Path(paths[0]).read_bytes()).hexdigest()
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    dataset.to_parquet(str(parquet / "train.parquet"))
    loaded, _ = load_age_dataset(parquet)
    assert sum(len(s) for s in loaded.values()) == 16 and set(loaded) == {"train", "validation", "test"}
    expected = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    assert {i for split in loaded.values() for i in split["id"]} == expected


# --- bad data ----------------------------------------------------------------------------------


def _csv_tree(tmp_path: Path, fixture_dir: Path, fixture_rows: list[dict], rows: list[dict] | None = None) -> Path:
    root = tmp_path / "bad"
    for row in fixture_rows:
        _copy(fixture_dir, row["file_name"], root / "images" / row["file_name"])
    rows = rows if rows is not None else [{"file_name": r["file_name"], "real_age": r["real_age"]} for r in fixture_rows]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows, root: rows[3].update(file_name="missing.jpg"), "row 5: image .*missing.jpg does not exist"),
        (lambda rows, root: rows[2].update(real_age="forty"), "row 4: age 'forty' is not a number"),
        (lambda rows, root: rows[1].update(real_age=-3), "row 3: age -3 is outside"),
        (lambda rows, root: (root / "images" / rows[0]["file_name"]).write_bytes(b"not a jpeg"), "row 2: image .* cannot be read"),
        (lambda rows, root: rows.append(dict(rows[0])), "listed twice"),
    ],
)
def test_bad_rows_name_file_and_row_or_are_skipped(tmp_path, fixture_dir, fixture_rows, mutate, message):
    root = _csv_tree(tmp_path, fixture_dir, fixture_rows)
    rows = [{"file_name": r["file_name"], "real_age": r["real_age"]} for r in fixture_rows]
    mutate(rows, root)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_age_dataset(root)
    if "twice" not in message:  # duplicates are never silently dropped
        data, report = load_age_dataset(root, LoadOptions(on_bad_rows="skip"))
        assert sum(report.skipped.values()) == 1
        assert sum(len(s) for s in data.values()) == 15


def test_empty_csv_and_missing_column(tmp_path, fixture_dir, fixture_rows):
    root = _csv_tree(tmp_path, fixture_dir, fixture_rows)
    (root / "labels.csv").write_text("")
    with pytest.raises(DataError, match="labels.csv is empty"):
        load_age_dataset(root)
    (root / "labels.csv").write_text("file_name,real_age\n")
    with pytest.raises(DataError, match="no rows"):
        load_age_dataset(root)
    (root / "labels.csv").write_text("file_name,years\na.jpg,3\n")
    with pytest.raises(DataError, match="no column 'real_age'.*--age-column"):
        load_age_dataset(root)


def test_missing_path_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_age_dataset(tmp_path / "nope")
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="cannot tell the data format"):
        load_age_dataset(tmp_path / "random")
