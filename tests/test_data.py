"""Every data source the loader recognises, built as small trees from the fixture images, bad data, and
near-duplicates (copies and re-encodes of a fixture image) across splits."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict, Image
from PIL import Image as PILImage

from age_model import data as data_module
from age_model.data import (
    DataError,
    LoadOptions,
    conflicting_groups,
    detect_format,
    dhash,
    dhashes,
    duplicate_group_ids,
    load_age_dataset,
    load_age_datasets,
    near_duplicate_groups,
    write_conflicts_csv,
)


@pytest.fixture(autouse=True)
def _dhash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """dHashes cached in this test's folder, never in the user's ~/.cache, and none remembered from other tests."""
    folder = tmp_path / "dhash-cache"
    monkeypatch.setenv("AGECHECK_CACHE_DIR", str(folder))
    monkeypatch.setattr(data_module, "_DHASH_MEMO", {})
    monkeypatch.setattr(data_module, "_DISK_CACHES_READ", set())
    return folder


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
            records.append(
                {
                    "file_name": name,
                    "num_ratings": 38,
                    "apparent_age_avg": row["real_age"] + 1.5,
                    "apparent_age_std": 3.0,
                    "real_age": row["real_age"],
                }
            )
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
    pd.DataFrame([{"file_name": r["file_name"], "real_age": r["real_age"]} for r in fixture_rows]).to_csv(
        root / "labels.csv", index=False
    )
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
        records.append(
            {
                "path": f"pics/{row['file_name']}",
                "years": row["real_age"],
                "part": ["train", "valid", "test", "train"][i % 4],
            }
        )
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
    dataset = Dataset.from_dict({"image": paths, "age": [float(r["real_age"]) for r in fixture_rows]}).cast_column(
        "image", Image()
    )
    DatasetDict(
        {
            "train": dataset.select(range(10)),
            "validation": dataset.select(range(10, 13)),
            "test": dataset.select(range(13, 16)),
        }
    ).save_to_disk(tmp_path / "saved")
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
    rows = (
        rows if rows is not None else [{"file_name": r["file_name"], "real_age": r["real_age"]} for r in fixture_rows]
    )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows, root: rows[3].update(file_name="missing.jpg"), "row 5: image .*missing.jpg does not exist"),
        (lambda rows, root: rows[2].update(real_age="forty"), "row 4: age 'forty' is not a number"),
        (lambda rows, root: rows[1].update(real_age=-3), "row 3: age -3 is outside"),
        (
            lambda rows, root: (root / "images" / rows[0]["file_name"]).write_bytes(b"not a jpeg"),
            "row 2: image .* cannot be read",
        ),
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


# --- near-duplicates ---------------------------------------------------------------------------

UTK = [
    "utk_1_0_0_20170110213015629.jpg.chip.jpg",
    "utk_24_0_2_20170104020112732.jpg.chip.jpg",
    "utk_36_1_3_20170109141841866.jpg.chip.jpg",
    "utk_52_0_4_20170103183610052.jpg.chip.jpg",
]


def _reencode(source: Path, target: Path, quality: int = 75) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with PILImage.open(source) as image:
        image.convert("RGB").save(target, "JPEG", quality=quality)


def test_copies_and_reencodes_are_one_group(tmp_path, fixture_dir):
    original = fixture_dir / "images" / UTK[1]
    _copy(fixture_dir, UTK[1], tmp_path / "copy.jpg")
    _reencode(original, tmp_path / "q75.jpg")
    _copy(fixture_dir, UTK[2], tmp_path / "other.jpg")
    files = [original, tmp_path / "copy.jpg", tmp_path / "q75.jpg", tmp_path / "other.jpg"]
    assert (tmp_path / "q75.jpg").read_bytes() != original.read_bytes()  # a different file ...
    assert (
        dhash(tmp_path / "q75.jpg") == dhash(original.read_bytes()) != dhash(tmp_path / "other.jpg")
    )  # ... the same photo
    assert near_duplicate_groups(files) == [[0, 1, 2]]
    assert near_duplicate_groups(files, min_size=1) == [[0, 1, 2], [3]]
    assert duplicate_group_ids([{"image": str(f)} for f in files]) == [0, 0, 0, 3]
    ids, hashes = dhashes(files)
    assert ids[0] == ids[1] == hashlib.sha256(original.read_bytes()).hexdigest() != ids[2]
    assert len(set(hashes)) == 2 and all(0 <= h < 2**64 for h in hashes)


def test_dhashes_are_cached_by_content_id(tmp_path, fixture_dir, _dhash_cache, monkeypatch):
    files = [fixture_dir / "images" / name for name in UTK]
    ids, hashes = dhashes(files)
    assert (_dhash_cache / f"{data_module.DHASH_VERSION}.json").is_file()
    monkeypatch.setattr(data_module, "_DHASH_MEMO", {})  # as in a new process: only the disk cache is left
    monkeypatch.setattr(data_module, "_DISK_CACHES_READ", set())
    monkeypatch.setattr(data_module, "dhash", lambda image: pytest.fail("hashed an image whose dHash is cached"))
    assert dhashes(["never read"] * 4, ids) == (ids, hashes)


def _duplicate_tree(tmp_path: Path, fixture_dir: Path, fixture_rows: list[dict]) -> tuple[Path, dict[str, str]]:
    """The 16 fixture images plus, for 4 UTKFace chips, a byte copy and a JPEG q75 re-encode; file -> group."""
    root = tmp_path / "dups"
    records, group_of = [], {}
    for row in fixture_rows:
        _copy(fixture_dir, row["file_name"], root / "images" / row["file_name"])
        records.append({"file_name": row["file_name"], "real_age": row["real_age"]})
        group_of[row["file_name"]] = row["file_name"]
    for name in UTK:
        age = next(r["real_age"] for r in fixture_rows if r["file_name"] == name)
        _copy(fixture_dir, name, root / "images" / f"copy_{name}")
        _reencode(fixture_dir / "images" / name, root / "images" / f"q75_{name}")
        records += [{"file_name": f"copy_{name}", "real_age": age}, {"file_name": f"q75_{name}", "real_age": age + 20}]
        group_of[f"copy_{name}"] = group_of[f"q75_{name}"] = name
    pd.DataFrame(records).to_csv(root / "labels.csv", index=False)
    return root, group_of


def _splits_of(dataset: DatasetDict) -> dict[str, str]:
    return {file: name for name, split in dataset.items() for file in split["file"]}


def test_own_split_keeps_near_duplicate_groups_whole(tmp_path, fixture_dir, fixture_rows):
    root, group_of = _duplicate_tree(tmp_path, fixture_dir, fixture_rows)
    crossed_without = 0
    for seed in range(8):
        dataset, report = load_age_dataset(root, LoadOptions(split_seed=seed))
        where = _splits_of(dataset)
        assert len(where) == 24 and report.duplicate_groups == 4 and report.duplicate_files == 12
        assert report.conflicting_groups == 4 and report.cross_split_groups == 0 and report.cross_split_dropped == 0
        for name in UTK:
            assert len({where[f] for f, g in group_of.items() if g == name}) == 1, (seed, name)
        plain, plain_report = load_age_dataset(root, LoadOptions(split_seed=seed, find_duplicates=False))
        assert plain_report.duplicate_groups is None
        plain_where = _splits_of(plain)
        crossed_without += sum(len({plain_where[f] for f, g in group_of.items() if g == name}) > 1 for name in UTK)
    assert crossed_without > 0  # without grouping the same seeds do split copies apart: the test can fail


def test_own_split_joins_person_groups_and_duplicates(tmp_path, fixture_dir):
    root = tmp_path / "fgnet"
    for name in (
        "fgnet_001A29.JPG",
        "fgnet_005A61.JPG",
        "fgnet_006A69.JPG",
        "fgnet_008A12.JPG",
        "fgnet_009A05.JPG",
        "fgnet_071A43.JPG",
        "fgnet_082A18.JPG",
        "fgnet_007A01.JPG",
    ):
        _copy(fixture_dir, name, root / name.split("_", 1)[1])
    _copy(fixture_dir, "fgnet_001A29.JPG", root / "099A31.JPG")  # person 099's photo is person 001's ...
    _copy(
        fixture_dir, "fgnet_006A69.JPG", root / "099A70.JPG"
    )  # ... and so is person 006's: 001, 006, 099 are one unit
    for seed in range(6):
        dataset, report = load_age_dataset(root, LoadOptions(split_seed=seed))
        where = _splits_of(dataset)
        assert len({where[f] for f in ("001A29.JPG", "099A31.JPG", "099A70.JPG", "006A69.JPG")}) == 1
        assert report.duplicate_groups == 2


def _given_split_tree(tmp_path: Path, fixture_dir: Path, fixture_rows: list[dict]) -> tuple[Path, dict[str, str]]:
    """A CSV with a split column whose duplicates cross it: train/test, train/validation, validation/test."""
    root = tmp_path / "given"
    parts = ["train", "valid", "test", "train"]
    records = []
    for i, row in enumerate(fixture_rows):
        _copy(fixture_dir, row["file_name"], root / "images" / row["file_name"])
        records.append({"file_name": row["file_name"], "real_age": row["real_age"], "split": parts[i % 4]})
    split_of = {r["file_name"]: r["split"] for r in records}
    age_of = {r["file_name"]: r["real_age"] for r in records}
    train, valid = [n for n in split_of if split_of[n] == "train"], [n for n in split_of if split_of[n] == "valid"]
    extra = [
        (f"copy_{train[0]}", train[0], "test", 25),
        (f"copy_{train[1]}", train[1], "valid", 1),
        (f"copy_{valid[0]}", valid[0], "test", 0),
    ]
    for file, original, split, shift in extra:
        _copy(fixture_dir, original, root / "images" / file)
        records.append({"file_name": file, "real_age": age_of[original] + shift, "split": split})
    pd.DataFrame(records).to_csv(root / "labels.csv", index=False)
    return root, {
        "train_test": extra[0][0],
        "train_valid": extra[1][0],
        "valid_test": extra[2][0],
        "conflict": train[0],
        "valid_kept": valid[0],
    }


def test_given_split_drops_crossing_duplicates_from_evaluation(tmp_path, fixture_dir, fixture_rows, caplog):
    root, names = _given_split_tree(tmp_path, fixture_dir, fixture_rows)
    with caplog.at_level(logging.WARNING, logger="age_model.data"):
        dataset, report = load_age_dataset(root)
    assert "3 near-duplicate groups" in caplog.text and "1 from validation, 2 from test" in caplog.text
    assert (report.duplicate_groups, report.cross_split_groups, report.cross_split_dropped) == (3, 3, 3)
    assert report.conflicting_groups == 1  # the 25-year gap; 1 year and 0 years are within the tolerance
    where = _splits_of(dataset)
    assert {n: len(s) for n, s in dataset.items()} == {"train": 8, "validation": 4, "test": 4}  # the fixture's own rows
    assert names["train_test"] not in where and names["train_valid"] not in where and names["valid_test"] not in where
    assert where[names["conflict"]] == "train" and where[names["valid_kept"]] == "validation"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="age_model.data"):
        kept, report = load_age_dataset(root, LoadOptions(cross_split_duplicates="keep"))
    assert "kept them" in caplog.text and report.cross_split_groups == 3 and report.cross_split_dropped == 0
    assert sum(len(s) for s in kept.values()) == 19
    unchecked, report = load_age_dataset(root, LoadOptions(find_duplicates=False))
    assert sum(len(s) for s in unchecked.values()) == 19 and report.cross_split_groups is None
    with pytest.raises(DataError, match="cross_split_duplicates"):
        load_age_dataset(root, LoadOptions(cross_split_duplicates="ignore"))


def test_conflicting_groups_are_listed_and_written(tmp_path, fixture_dir, fixture_rows, capsys):
    root, names = _given_split_tree(tmp_path, fixture_dir, fixture_rows)
    dataset, _ = load_age_dataset(root, LoadOptions(cross_split_duplicates="keep"))
    groups = conflicting_groups(dataset)
    assert len(groups) == 1
    group = groups[0]
    assert group["files"] == [names["conflict"], names["train_test"]] and group["splits"] == ["train", "test"]
    assert group["age_spread"] == 25 and group["ages"][1] - group["ages"][0] == 25 and group["size"] == 2
    assert len(set(group["ids"])) == 1 and group["same_photo"] and group["distances"] == [0, 0]  # byte copies
    assert [g["age_spread"] for g in conflicting_groups(dataset, tolerance=0)] == [25, 1]
    assert conflicting_groups(dataset["train"]) == []  # one split alone holds no pair
    out = tmp_path / "conflicts.csv"
    assert write_conflicts_csv(groups, out) == 2
    assert data_module.main(["conflicts", str(root), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["file"] for r in rows] == group["files"] and {r["group"] for r in rows} == {"1"}
    assert (
        [r["split"] for r in rows] == ["train", "test"]
        and rows[0]["id"] == group["ids"][0]
        and rows[0]["same_photo"] == "yes"
    )
    assert "3 near-duplicate groups hold 6 rows" in capsys.readouterr().err
    assert data_module.main(["conflicts", str(tmp_path / "missing")]) == 1


def test_merged_sources_drop_copies_that_cross_splits(tmp_path, fixture_dir, fixture_rows, caplog):
    root = tmp_path / "other"
    records = []
    for row in fixture_rows[:4]:  # test: copies of the fixture's first 4 images; train: mirror images (other photos)
        _copy(fixture_dir, row["file_name"], root / "images" / f"copy_{row['file_name']}")
        with PILImage.open(fixture_dir / "images" / row["file_name"]) as image:
            image.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT).save(
                root / "images" / f"flip_{row['file_name']}", "JPEG", quality=95
            )
        records += [
            {"file_name": f"copy_{row['file_name']}", "real_age": row["real_age"], "split": "test"},
            {"file_name": f"flip_{row['file_name']}", "real_age": row["real_age"], "split": "train"},
        ]
    pd.DataFrame(records).to_csv(root / "labels.csv", index=False)
    alone, _ = load_age_dataset(fixture_dir)
    first_split = _splits_of(alone)
    crossing = sum(first_split[r["file_name"]] != "test" for r in fixture_rows[:4])
    assert crossing  # the fixture's own split puts some of them in train or validation
    with caplog.at_level(logging.WARNING, logger="age_model.data"):
        merged, reports = load_age_datasets([fixture_dir, root])
    assert len(merged["test"]) == len(alone["test"]) + 4 - crossing and len(merged["train"]) == len(alone["train"]) + 4
    assert f"{crossing} near-duplicate groups" in caplog.text
    assert [r.cross_split_groups for r in reports] == [0, 0]  # each source alone is clean


def test_colliding_hashes_of_different_faces_are_flagged(tmp_path, fixture_dir, fixture_rows, monkeypatch):
    """Equal 64-bit dHashes can join different faces: the finer 256-bit check says the group is no one photo."""
    monkeypatch.setattr(data_module, "dhash", lambda image: 7)  # every image collides
    rows = [{"image": str(fixture_dir / "images" / name), "age": float(age)} for name, age in zip(UTK[:2], (1, 24))]
    rows.append({"image": rows[0]["image"], "age": 30.0})  # and a byte copy of the first with another age
    assert near_duplicate_groups(rows) == [[0, 1, 2]]
    (group,) = conflicting_groups(rows)
    assert not group["same_photo"] and group["max_distance"] > data_module.SAME_PHOTO_DISTANCE
    assert (
        group["distances"][0] == group["distances"][2] == 0 and group["distances"][1] > data_module.SAME_PHOTO_DISTANCE
    )
    summary = data_module.duplicate_summary(rows)
    assert (summary["groups"], summary["unconfirmed"], summary["conflicting"], summary["conflicting_same_photo"]) == (
        1,
        1,
        1,
        0,
    )
