"""Export round trip through ``datasets.load_dataset``, the retraining merge, and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from age_model.feedback import FeedbackError, FeedbackStore, Status
from age_model.feedback.cli import main
from age_model.feedback.merge import apply_feedback
from age_model.publish import export_feedback
from tests.feedback_support import make_image

UTK24 = "utk_24_0_2_20170104020112732.jpg.chip.jpg"
UTK36 = "utk_36_1_3_20170109141841866.jpg.chip.jpg"
UTK52 = "utk_52_0_4_20170103183610052.jpg.chip.jpg"
UTK8 = "utk_8_1_1_20170109203648153.jpg.chip.jpg"
FGNET18 = "fgnet_082A18.JPG"


def file_id(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def populate(store: FeedbackStore, images: Path) -> dict[str, str]:
    """Dataset corrections (settled, pending), uploads with and without consent."""
    ids = {}
    ids["utk24"] = store.register_sample(
        file_id(images / UTK24), source="utkface", original_name=UTK24, original_label=24
    )
    store.add_vote(ids["utk24"], 26, "ann")
    store.add_vote(ids["utk24"], 27, "bob")
    ids["utk36"] = store.register_sample(file_id(images / UTK36), source="utkface", original_label=36)
    store.add_vote(ids["utk36"], 36, "ann")
    ids["fgnet18"] = store.add_image(images / FGNET18, source="fgnet", original_name=FGNET18, original_label=18)
    store.add_vote(ids["fgnet18"], 16, "ann")  # crosses 18: pending
    ids["upload"] = store.add_upload(make_image(1, exif_gps=True), 42, "shop", consent=True, model_age=40).sample_id
    ids["private"] = store.add_upload(make_image(2), 30, "shop", consent=False, model_age=31).sample_id
    ids["pending_upload"] = store.add_upload(make_image(3), 20, "shop", consent=True, model_age=16).sample_id
    return ids


def test_export_round_trip(store: FeedbackStore, fixture_dir: Path, tmp_path: Path) -> None:
    ids = populate(store, fixture_dir / "images")
    out = tmp_path / "export"
    result = export_feedback(store, out)
    assert result.num_rows == 5 and (out / "README.md").is_file()
    train = datasets.load_dataset(str(out), split="train")
    assert isinstance(train.features["image"], datasets.Image)
    assert {"image", "age", "age_std", "num_votes", "id", "source", "previous_label", "consent", "status"} <= set(
        train.column_names
    )
    rows = {r["id"]: r for r in train.cast_column("image", datasets.Image(decode=False))}
    assert set(rows) == {
        ids[k] for k in ("utk24", "utk36", "fgnet18", "upload", "pending_upload")
    }  # no unconsented upload
    utk = rows[ids["utk24"]]
    assert (utk["age"], utk["age_std"], utk["num_votes"], utk["status"], utk["previous_label"]) == (
        26.5,
        0.5,
        2,
        "settled",
        24.0,
    )
    assert utk["image"] is None and utk["consent"] is None and utk["original_name"] == UTK24  # corrections only
    assert (
        rows[ids["fgnet18"]]["status"] == str(Status.PENDING_SECOND_OPINION) and rows[ids["fgnet18"]]["image"] is None
    )
    up = rows[ids["upload"]]
    assert up["consent"] is True and up["source"] == "upload" and up["previous_label"] == 40.0
    assert hashlib.sha256(up["image"]["bytes"]).hexdigest() == ids["upload"]  # same id the data loader computes
    assert train.filter(lambda r: r["id"] == ids["upload"])[0]["image"].getexif() == {}  # no GPS leaves the store
    votes = datasets.load_dataset("parquet", data_files=str(out / "votes" / "*.parquet"), split="train")
    assert set(votes["sample_id"]) == set(rows) and "note" not in votes.column_names
    card = (out / "README.md").read_text()
    assert "agecheck" in card and "ann" in card and "license" in card

    stats = result.stats
    assert (
        stats["num_samples"] == 6 and stats["num_rows"] == 5 and stats["annotators"] == {"ann": 3, "bob": 1, "shop": 3}
    )
    assert stats["consent"] == {"given": 2, "refused": 1} and stats["agreement"]["pairs"] == 1
    assert stats["agreement"]["within_5"] == 1.0 and stats["statuses"]["pending_second_opinion"] == 2

    with pytest.raises(FileExistsError):
        export_feedback(store, out)
    again = export_feedback(store, out, overwrite=True, include_dataset_images=True)
    reloaded = datasets.load_dataset(
        "parquet", data_files=str(again.path / "data" / "*.parquet"), split="train"
    )  # same folder
    with_images = {r["id"]: r["image"] for r in reloaded.cast_column("image", datasets.Image(decode=False))}
    assert with_images[ids["fgnet18"]]["bytes"] == (fixture_dir / "images" / FGNET18).read_bytes()
    assert with_images[ids["utk24"]] is None  # known by id only: nothing to include
    assert not list(tmp_path.glob(".export.tmp-*"))


def small_training_set(images: Path) -> datasets.DatasetDict:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "age": datasets.Value("float32"),
            "id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "file": datasets.Value("string"),
        }
    )

    def split(names: list[str], ages: list[float]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "image": [str(images / n) for n in names],
                "age": ages,
                "id": [file_id(images / n) for n in names],
                "source": ["utkface" if n.startswith("utk") else "fgnet" for n in names],
                "file": names,
            },
            features=features,
        )

    return datasets.DatasetDict(
        {"train": split([UTK24, UTK36, UTK52], [24, 36, 52]), "test": split([FGNET18, UTK8], [18, 8])}
    )


def test_apply_feedback_from_export_and_from_store(store_url: str, fixture_dir: Path, tmp_path: Path) -> None:
    images = fixture_dir / "images"
    with FeedbackStore(store_url) as store:
        ids = populate(store, images)
        export_feedback(store, tmp_path / "export")
    base = small_training_set(images)
    expected = {
        "corrected": 2,
        "changed": 1,
        "corrected_by_split": {"train": 2},
        "withheld_test": 0,
        "added": 1,
        "skipped_unsettled": 2,
        "unmatched": 0,
        "already_present": 0,
    }
    for source in (str(tmp_path / "export"), store_url):
        merged, summary = apply_feedback(base, source)
        assert summary == expected
        train = merged["train"]
        assert isinstance(train.features["image"], datasets.Image) and train.features["age"].dtype == "float32"
        ages = dict(zip(train["id"], train["age"]))
        assert ages[ids["utk24"]] == 26.5 and ages[ids["utk36"]] == 36 and ages[file_id(images / UTK52)] == 52
        assert ages[ids["upload"]] == 42 and len(train) == 4 and ids["private"] not in ages
        added = train[3]
        assert added["source"] == "upload" and added["image"].size == (32, 32) and added["file"]
        assert dict(zip(merged["test"]["id"], merged["test"]["age"]))[ids["fgnet18"]] == 18  # pending: untouched
    with pytest.raises(FileNotFoundError, match="not found"):
        apply_feedback(base, tmp_path / "nope")


def test_cli(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FeedbackStore(store_url) as store:
        vote = store.add_upload(make_image(9), 50, "shop", consent=True, model_age=48)
        root = store.images.root
    csv_file = tmp_path / "votes.csv"
    other = hashlib.sha256(b"x").hexdigest()
    csv_file.write_text(
        f"sample_id,age,annotator,consent,created_at\n{vote.sample_id},52,ann,,2025-01-01T10:00:00+00:00\n{other},33,ann,no,\n"
    )
    assert main(["import-csv", str(csv_file), "--store", store_url]) == 2  # unknown sample: nothing imported
    assert "unknown sample" in capsys.readouterr().err
    assert main(["import-csv", str(csv_file), "--store", store_url, "--register-unknown", "utkface"]) == 0
    assert "imported 2 votes" in capsys.readouterr().out
    assert main(["stats", "--store", store_url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_votes"] == 3 and stats["annotators"] == {"ann": 2, "shop": 1}
    assert main(["stats", "--store", store_url]) == 0 and "agreement: 1 pairs" in capsys.readouterr().out
    assert main(["undo", "--store", store_url, "--annotator", "ann"]) == 0
    assert main(["fsck", "--store", store_url]) == 0
    (root / "ab").mkdir(exist_ok=True)
    (root / "ab" / ("ab" * 32 + ".jpg")).write_bytes(make_image(5))
    capsys.readouterr()
    assert main(["fsck", "--store", store_url, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["orphan_files"]
    assert main(["fsck", "--store", store_url, "--clean", "--grace", "0"]) == 0

    pushed = {}
    monkeypatch.setattr(
        "age_model.publish.push_export",
        lambda folder, repo_id, private: pushed.update(folder=folder, repo_id=repo_id, private=private) or "url",
    )
    out = tmp_path / "exp"
    assert main(["export", str(out), "--store", store_url, "--push-to-hub", "org/feedback"]) == 0
    assert pushed == {"folder": out, "repo_id": "org/feedback", "private": True}  # private unless --public
    assert (
        main(["export", str(out), "--store", store_url, "--overwrite", "--push-to-hub", "org/feedback", "--public"])
        == 0
    )
    assert pushed["private"] is False
    assert len(datasets.load_dataset(str(out), split="train")) == 1  # the undo left the other sample unvoted
    capsys.readouterr()
    assert main(["export", str(out), "--store", store_url]) == 2 and "not empty" in capsys.readouterr().err


def test_cli_errors_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--store", "feedback.db"]) == 2
    assert "not a store URL" in capsys.readouterr().err
    assert main(["fsck", "--store", f"sqlite:///{tmp_path}/missing/feedback.db"]) == 2
    assert "no feedback store" in capsys.readouterr().err
    assert main(["import-csv", str(tmp_path / "none.csv"), "--store", f"sqlite:///{tmp_path}/s.db"]) == 2
    assert "CSV file not found" in capsys.readouterr().err
    help_text = subprocess.run(
        [sys.executable, "-m", "age_model.feedback", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    assert all(cmd in help_text for cmd in ("export", "stats", "fsck", "import-csv"))


def test_push_export_goes_through_the_hub_module(store: FeedbackStore, tmp_path: Path) -> None:
    from age_model.publish import push_export

    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs["private"], kwargs["repo_type"])
            return f"https://hub.example/datasets/{repo_id}"

        def upload_folder(self, **kwargs):
            calls["files"] = sorted(
                p.relative_to(kwargs["folder_path"]).as_posix()
                for p in Path(kwargs["folder_path"]).rglob("*")
                if p.is_file()
            )

    store.add_upload(make_image(4), 30, "shop", consent=True)
    out = export_feedback(store, tmp_path / "exp").path
    assert push_export(out, "org/feedback", token="hf_test", api=FakeApi()).startswith("https://hub.example")
    assert calls["create"] == ("org/feedback", True, "dataset")
    assert "README.md" in calls["files"] and "data/train-00000-of-00001.parquet" in calls["files"]
    with pytest.raises(FileNotFoundError, match="not a feedback export"):
        push_export(tmp_path, "org/feedback", token="hf_test", api=FakeApi())


def test_apply_feedback_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    """A mistyped store URL must fail loudly, not create an empty store and apply nothing."""
    missing = tmp_path / "no-such" / "feedback.db"
    with pytest.raises(FeedbackError):
        apply_feedback(datasets.DatasetDict(), f"sqlite:///{missing}")
    assert not missing.exists()


def test_export_declares_the_votes_config_with_pseudonyms_guidelines_and_alpha(
    store: FeedbackStore, tmp_path: Path
) -> None:
    import yaml

    first = store.add_upload(make_image(10), 30, "alice", consent=True, model_age=31)
    store.add_vote(first.sample_id, 33, "bob")
    second = store.add_upload(make_image(11), 60, "alice", consent=True, model_age=58)
    store.add_vote(second.sample_id, 62, "bob")
    store.add_upload(make_image(12), 40, "public:0123456789ab", consent=True, model_age=41)  # a stranger's report
    # datasets caches a local folder with YAML configs by its name and config list: a name of its own
    out = export_feedback(store, tmp_path / f"votes-config-{store.location.backend}-{tmp_path.name}").path
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default", "votes"]
    votes = datasets.load_dataset(str(out), "votes", split="train")
    assert set(votes["annotator"]) == {"annotator-1", "annotator-2", "public-1"}  # in the order of first votes
    assert "alice" not in card and "bob" not in card and "annotator-1" in card
    assert "Annotation guidelines" in card and "Krippendorff's alpha (interval) 0.99" in card
    assert len(datasets.load_dataset(str(out), split="train")) == 3  # the default config: labelled samples
    named = export_feedback(store, tmp_path / "named", real_names=True).path
    assert set(
        datasets.load_dataset("parquet", data_files=str(named / "votes" / "*.parquet"), split="train")["annotator"]
    ) == {"alice", "bob", "public:0123456789ab"}
