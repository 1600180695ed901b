"""Rules and tables that once had several copies now have one home; these tests catch a copy coming back
or two readers drifting apart (issue: one home for every rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from age_model import ages, cards, policy
from age_model.cards import model_card
from age_model.cards import stats as card_stats
from age_model.data import SOURCE_CODES, SPLIT_ALIASES, DataError, LoadOptions, LoadReport, _parse_age, detect_format
from age_model.feedback.errors import InvalidAgeError
from age_model.feedback.validate import check_age
from age_model.metrics.age_error import age_error
from age_model.repo_ids import is_repo_id


@pytest.mark.parametrize(
    "age, accepted", [(0.0, True), (120.0, True), (120.5, False), (-0.5, False), (float("nan"), False)]
)
def test_data_loader_and_feedback_store_accept_the_same_ages(age: float, accepted: bool, tmp_path: Path) -> None:
    """A label the loader takes is one an annotator may enter, and the other way round."""
    options, report = LoadOptions(), LoadReport("csv", faces="cropped")
    if accepted:
        assert _parse_age(str(age), tmp_path / "labels.csv", 2, report, options) == age
        assert check_age(age) == age
        assert ages.in_age_range(age)
    else:
        with pytest.raises(DataError):
            _parse_age(str(age), tmp_path / "labels.csv", 2, report, options)
        with pytest.raises(InvalidAgeError):
            check_age(age)
        assert not ages.in_age_range(age)


def test_the_page_the_store_and_the_loader_share_one_age_range() -> None:
    from age_model.feedback import AGE_MAX, AGE_MIN
    from age_model.ui import predict_tab

    assert predict_tab.AGE_RANGE is ages.AGE_RANGE and (AGE_MIN, AGE_MAX) == ages.AGE_RANGE
    assert not hasattr(policy, "AGE_RANGE")  # one import path for the range


def test_metric_cards_and_benchmark_share_the_bands() -> None:
    from bench.accuracy import BIAS_BANDS

    assert age_error.AGE_BANDS is ages.AGE_BANDS
    assert BIAS_BANDS == tuple(name for name, _, high in ages.AGE_BANDS if high <= 65)
    labels = ages.band_labels()
    assert labels == ["under 13", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert list(cards.age_band_counts([1, 17, 18, 24, 25, 99])) == labels  # cards count in these very bands
    assert [ages.band_of(a) for a in (12.9, 13, 24.99, 25, 64.9, 65)] == [
        "under 13",
        "13-17",
        "18-24",
        "25-34",
        "55-64",
        "65+",
    ]
    with pytest.raises(KeyError, match="not an age band"):
        ages.band_label("under18")


def test_the_metric_counts_minors_passed_with_the_apps_rule() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(5, 60, 400)
    pred = np.concatenate([true[:200] + rng.normal(0, 6, 200), np.full(200, 25.0)])  # many exactly at the threshold
    out = age_error.age_errors(pred, true, threshold=25.0)
    asked = policy.asks_for_id(pred, 0.0, 25.0)
    assert out["minors_passed_rate"] == pytest.approx(float((~asked[true < 18]).mean()))
    assert out["adults_flagged_rate"] == pytest.approx(float(asked[true >= 25].mean()))


@pytest.mark.parametrize("alias", sorted(SPLIT_ALIASES))
def test_cards_read_split_names_as_the_loader_does(alias: str) -> None:
    assert card_stats.split_name(alias) == SPLIT_ALIASES[alias] == card_stats.split_name(f" {alias.upper()} ")


@pytest.mark.parametrize(
    "value, hub",
    [
        ("google/efficientnet-b0", True),
        ("org/name.v2", True),
        ("../shared/weights/x", False),
        ("./org/name", False),
        ("/abs/path", False),
        ("a/b/c", False),
        ("org--x/y", False),
        ("name-only", False),
        ("~/models/x", False),
    ],
)
def test_one_repo_id_rule_for_loaders_cards_and_cli(
    value: str, hub: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_repo_id(value) is hub and model_card.is_repo_id is is_repo_id
    if hub:
        assert detect_format(value) == "hub"
    else:
        with pytest.raises(DataError, match="no such file or folder"):
            detect_format(value)


def test_a_local_folder_shaped_like_a_repo_id_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_repo_id("org/name")


def test_cards_and_benchmark_name_attribute_codes_from_one_table() -> None:
    rows = [{"gender": "0", "race": "2"}, {"gender": "1", "race": "2"}, {"gender": "1", "race": ""}]
    utk = card_stats.utkface_extra(rows)
    assert [g["label"] for g in utk["genders"]] == list(SOURCE_CODES["utkface"]["gender"].values())
    assert {r["label"]: r["count"] for r in utk["races"]}["Asian"] == 2 and utk["race_missing"] == 1
    assert [g["label"] for g in card_stats.aaf_extra(rows)["genders"]] == ["female", "male"]


def test_one_default_model_and_one_default_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The app, the predict CLI and the benchmarks ask age_model.resources for the model; the app, the
    feedback CLI and the store ask feedback.urls for the store (a Space's /data included)."""
    from age_model import app, predict, resources
    from age_model.feedback import cli as feedback_cli
    from age_model.feedback import store, urls
    from bench import groups as bench_groups

    assert predict.default_model is resources.default_model is bench_groups.default_model
    monkeypatch.setenv("AGE_MODEL", str(tmp_path))
    assert resources.default_model() == str(tmp_path)
    assert app.default_url is urls.default_url is feedback_cli.default_url is store.default_url
