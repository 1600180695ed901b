"""Cards render from data, parse with huggingface_hub's card classes and carry the numbers they were given."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData

from age_model import cards
from age_model.ages import band_label
from age_model.cards.__main__ import main as cards_main
from age_model.cards.model_card import is_repo_id
from age_model.cards.stats import size_category
from age_model.modeling import AgeSettings

METRICS = {
    "test_mae": 5.2371,
    "test_rmse": 7.0412,
    "test_cs5": 0.6123,
    "test_mae_under13": 3.4,
    "test_mae_13_17": 4.6,
    "test_mae_18_24": 5.1,
    "test_mae_25_34": 4.8,
    "test_mae_35_44": 5.9,
    "test_mae_45_54": 6.3,
    "test_mae_55_64": 7.4,
    "test_mae_65plus": 10.2,
    "test_minors_passed_rate": 0.043,
    "test_adults_flagged_rate": 0.121,
    "test_threshold": 25.0,
    "test_n": 1957,
    "test_runtime": 41.5,
    "eval_mae": 5.61,
    "eval_cs5": 0.59,
    "epoch": 3.0,
}
SUMMARY = {
    "name": "utkface",
    "source": "../shared/data/utkface",
    "format": "csv",
    "target": "real",
    "splits": {"train": 6842, "validation": 979, "test": 1957},
    "age_stats": {"train": {"min": 1, "median": 25, "max": 110, "mean": 29.4}},
    "feedback": {"corrected": 12, "added": 3},
    "license": "UTKFace: non-commercial research only",
    "from_scratch": False,
}


def settings(**overrides) -> AgeSettings:
    values = dict(head="regression", base_model="../shared/weights/efficientnet-lite0", image_size=160, crop_margin=0.4)
    return AgeSettings(**{**values, **overrides})


def metric(card: ModelCard, metric_type: str, split: str = "test") -> float:
    return next(
        r.metric_value for r in card.data.eval_results if r.metric_type == metric_type and r.dataset_split == split
    )


def test_model_card_parses_and_carries_mae(tmp_path: Path) -> None:
    card = cards.render_model_card(tmp_path, METRICS, settings(), SUMMARY, hub_model_id="acme/agecheck-utk")
    parsed = ModelCard(str(card))
    assert metric(parsed, "mae") == METRICS["test_mae"]
    assert metric(parsed, "cs5") == METRICS["test_cs5"]
    assert metric(parsed, "rmse") == METRICS["test_rmse"]
    assert metric(parsed, "mae", "validation") == METRICS["eval_mae"]
    data = parsed.data
    assert data.model_name == "acme/agecheck-utk" and data.library_name == "transformers"
    assert data.base_model is None  # a local folder is no Hub id
    assert data.license == "other" and data.license_name == "utkface-non-commercial-research-only"
    text = parsed.text
    for needle in (
        "160x160",
        "40%",
        "`regression`",
        "Challenge-25",
        "never decides",
        "4.3%",
        "12.1%",
        "non-commercial research only",
        "65+ (MAE 10.2)",
        "labels corrected: 12",
    ):
        assert needle in text, needle


def test_model_card_tells_how_faces_are_framed(tmp_path: Path) -> None:
    crops = cards.render_model_card(tmp_path, {}, settings(faces="detect", crop_style="square"), {"faces": "cropped"})
    assert "trained on ready-made face crops" in crops.text and "Crop style **`square`**" in crops.text
    photos = cards.render_model_card(
        tmp_path, {}, settings(faces="detect", crop_style="aligned", align_scale=1.3), {"faces": "detect"}
    )
    assert "in training as at serving" in photos.text and "scale 1.30" in photos.text


def test_model_card_skips_nan_and_non_band_metrics(tmp_path: Path) -> None:
    metrics = {**METRICS, "test_mae_under13": float("nan"), "test_mae_without_flip_tta": 5.4, "test_rmse": None}
    card = ModelCard(str(cards.render_model_card(tmp_path, metrics, settings(), SUMMARY)))
    assert "| under 13 |" not in card.text and "without-flip" not in card.text
    assert "| MAE without flip TTA (years) | 5.40 | n/a |" in card.text
    assert {r.metric_type for r in card.data.eval_results} == {"mae", "cs5"}
    assert card.data.model_name == tmp_path.name


def test_model_card_data_round_trip(tmp_path: Path) -> None:
    card = cards.render_model_card(tmp_path, METRICS, settings(), SUMMARY, hub_model_id="acme/agecheck-utk")
    data = card.data.to_dict()
    rebuilt = ModelCardData(
        **{k: v for k, v in data.items() if k != "model-index"},
        eval_results=card.data.eval_results,
        model_name=card.data.model_name,
    )
    assert rebuilt.to_dict() == data
    assert all(isinstance(r, EvalResult) for r in card.data.eval_results)


def test_model_card_is_honest_about_the_base(tmp_path: Path) -> None:
    hub_base = cards.render_model_card(
        tmp_path, METRICS, settings(base_model="google/efficientnet-b0"), {**SUMMARY, "hub_id": "acme/utkface"}
    )
    assert hub_base.data.base_model == "google/efficientnet-b0"
    assert hub_base.data.datasets == ["acme/utkface"]
    scratch = cards.render_model_card(
        tmp_path, METRICS, settings(base_model="google/efficientnet-b0"), {**SUMMARY, "from_scratch": True}
    )
    assert scratch.data.base_model is None
    assert "random init from config" in scratch.text


def test_config_only_base_folder_counts_as_scratch(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    card = cards.render_model_card(tmp_path, METRICS, settings(base_model=str(tmp_path / "base")), {"name": "utkface"})
    assert "random init from config" in card.text


@pytest.mark.parametrize("head", ["regression", "gaussian", "bins"])
def test_model_card_explains_each_head(tmp_path: Path, head: str) -> None:
    card = ModelCard(str(cards.render_model_card(tmp_path, {}, settings(head=head, faces="cropped"), {})))
    assert f"`{head}`" in card.text and "Faces mode **`cropped`**" in card.text
    assert "No test metrics were recorded" in card.text
    assert card.data.eval_results is None and card.data.license == "unknown"


def test_feedback_card_carries_the_stats() -> None:
    stats = {
        "num_samples": 120,
        "num_votes": 300,
        "annotators": {"alice": 180, "bob": 120},
        "agreement": {"mean_abs_diff": 3.4, "within_5": 0.78},
        "consent": {"yes": 30, "no": 2},
        "sources": {"upload": 32, "utkface": 88},
        "statuses": {"agreed": 100, "disputed": 20},
        "license": "cc-by-nc-4.0",
    }
    card = DatasetCard(str(cards.render_feedback_card(stats)))
    assert card.data.license == "cc-by-nc-4.0" and card.data.size_categories == ["n<1K"]
    for needle in ("| alice | 180 |", "| 300 |", "2.50", "78.0%", "| upload | 32 |", "| no | 2 |", "| disputed | 20 |"):
        assert needle in card.text, needle


@pytest.mark.parametrize(
    "stats", [{}, {"annotators": ["alice"], "agreement": None, "num_votes": "many"}, {"num_samples": 5}]
)
def test_feedback_card_tolerates_missing_keys(stats: dict) -> None:
    card = DatasetCard(str(cards.render_feedback_card(stats)))
    assert "Not recorded" in card.text and card.data.pretty_name


def test_feedback_card_passes_layout_metadata_through() -> None:
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    card = DatasetCard(str(cards.render_feedback_card({"configs": configs})))
    assert card.data.configs == configs


def test_helpers() -> None:
    assert [band_label(s) for s in ("under13", "13_17", "65plus")] == ["under 13", "13-17", "65+"]
    assert size_category(7591) == "1K<n<10K" and size_category(12) == "n<1K"
    assert cards.age_stats([1, 2, 4, 9]) == {"n": 4, "min": 1, "median": 3.0, "max": 9, "mean": 4.0}
    assert cards.age_band_counts([5, 17, 18, 24, 25, 70])["18-24"] == 2
    assert is_repo_id("google/efficientnet-b0") and not is_repo_id("../shared/weights/x")
    assert (
        cards.known_dataset("appa-real-release").name == "appa-real"
        and cards.known_dataset("UTKFace").name == "utkface"
    )
    assert cards.known_dataset("fixture") is None


# ---------------------------------------------------------------- data cards from the shared label files


@pytest.mark.parametrize("name", sorted(cards.KNOWN_DATASETS))
def test_committed_data_cards_equal_the_generator(shared_dir: Path, name: str) -> None:
    labels = shared_dir / cards.KNOWN_DATASETS[name].labels
    committed = (cards.CARDS_DIR / f"{name}.md").read_text(encoding="utf-8")
    assert str(cards.render_dataset_card(name, labels)) == committed, (
        f"data_cards/{name}.md is stale: python -m age_model.cards dataset-card {name} --out data_cards/{name}.md"
    )


def test_appa_real_card_numbers(shared_dir: Path) -> None:
    card = DatasetCard.load(cards.CARDS_DIR / "appa-real.md")
    splits = {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]}
    assert splits == {"train": 4113, "validation": 1500, "test": 1978}
    assert card.data.license == "other" and card.data.size_categories == ["1K<n<10K"]
    assert "7,591" in card.text and "40% margin" in card.text and "38" in card.text


def test_utkface_card_numbers(shared_dir: Path) -> None:
    card = DatasetCard.load(cards.CARDS_DIR / "utkface.md")
    splits = {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]}
    assert splits == {"train": 16599, "validation": 2370, "test": 4738}
    assert card.data.pretty_name == "UTKFace" and card.data.size_categories == ["10K<n<100K"]
    text = " ".join(card.text.split())  # the template wraps lines where it likes
    assert "23,707 labelled face crops" in text and "20261201" in text and "12.9% of the faces are under 10" in text
    # near-duplicates, computed from the images: the numbers ORIGIN.txt of the shared copy gives
    assert "**650 groups of 1,372 files** (375 groups of byte-identical files; the largest group has 6 files)" in text
    assert (
        "in 63 groups a finer 256-bit dHash tells the faces apart" in text
    )  # colliding 64-bit hashes of different faces
    assert (
        "430 groups carry different ages, **380 of them more than 1 year apart** (320 of those confirmed as one photo"
        in text
    )
    assert "No group spans two splits." in text


def test_aaf_card_numbers(shared_dir: Path) -> None:
    card = DatasetCard.load(cards.CARDS_DIR / "aaf.md")
    splits = {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]}
    assert splits == {"train": 5845, "validation": 792}
    assert card.data.license == "other" and card.data.license_name == "aaf-research-use-citation"
    text = " ".join(card.text.split())
    assert (
        "6,637 aligned faces, ages 2-80" in text and "**no explicit licence**" in text and "cheng2019exploiting" in text
    )
    assert (
        "**71 groups of 146 files** (55 groups of byte-identical files" in text and "No group spans two splits." in text
    )
    assert (
        "confirms every group as one photo" in text
        and "**55 of them more than 1 year apart** (55 of those confirmed" in text
    )


def test_card_leaves_duplicates_out_without_images(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file_name,real_age,gender,race,split\na.jpg,30,0,0,train\nb.jpg,8,1,2,valid\nc.jpg,15,1,,test\n",
        encoding="utf-8",
    )
    text = str(cards.render_dataset_card("utkface", labels))
    assert (
        "Near-duplicates" not in text
        and "3 labelled face crops" in text
        and "(1 lack the race field)" in " ".join(text.split())
    )


def test_dataset_card_cli(shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "utkface.md"
    labels = shared_dir / cards.KNOWN_DATASETS["utkface"].labels
    assert cards_main(["dataset-card", "utkface", "--labels", str(labels), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (cards.CARDS_DIR / "utkface.md").read_text(encoding="utf-8")
    assert cards_main(["dataset-card", "utkface", "--labels", str(tmp_path / "missing.csv")]) == 1


def test_a_multi_source_card_names_every_source_its_terms_and_per_source_figures(tmp_path):
    from age_model.cards import render_model_card
    from age_model.modeling import AgeSettings

    metrics = {
        "test_mae": 4.8,
        "test_utkface_mae": 4.8,
        "eval_mae": 5.0,
        "eval_aaf_mae": 5.5,
        "eval_utkface_mae": 4.9,
        "eval_aaf_within_spread": 0.71,
    }
    summary = {"name": "utkface+aaf", "source": "a, b", "sources": ["utkface", "aaf"], "reframed_sources": ["aaf"]}
    text = str(render_model_card(tmp_path, metrics, AgeSettings(head="bins"), summary))
    assert "data_cards/utkface.md" in text and "data_cards/aaf.md" in text
    assert "non-commercial research only" in text and "citation asked" in text  # both sources' terms
    assert "| aaf | no test split | 5.50 |" in text and "| utkface | 4.80 | 4.90 |" in text
    assert "71.0%" in text and "re-cut through the face detector" in text


def test_a_test_split_with_one_source_reports_its_pooled_figures_for_it(tmp_path):
    from age_model.cards import render_model_card
    from age_model.modeling import AgeSettings

    metrics = {"test_mae": 4.96, "eval_mae": 5.3, "eval_aaf_mae": 5.9, "eval_utkface_mae": 5.0}
    summary = {
        "sources": ["utkface", "aaf"],
        "splits_by_source": {"test": {"utkface": 10}, "validation": {"utkface": 5, "aaf": 5}},
    }
    text = str(render_model_card(tmp_path, metrics, AgeSettings(head="bins"), summary))
    assert "| utkface | 4.96 | 5.00 |" in text and "| aaf | no test split | 5.90 |" in text
