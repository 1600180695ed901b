"""A short real training run on the fixture with a tiny random ResNet: it saves, loads, predicts and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from age_model.modeling import AgeSettings, load_age_model, outputs_to_age
from age_model.training import age_loss
from tests.conftest import make_tiny_model


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("base"), image_size=32)


def _train(data: Path, base: Path, out: Path, *extra: str) -> int:
    return train.main(
        [
            "--data",
            str(data),
            "--base-model",
            str(base),
            "--output-dir",
            str(out),
            "--image-size",
            "32",
            "--per-device-train-batch-size",
            "4",
            "--per-device-eval-batch-size",
            "8",
            "--num-train-epochs",
            "2",
            "--learning-rate",
            "1e-3",
            "--logging-steps",
            "1",
            "--disable-tqdm",
            "true",
            "--seed",
            "1",
            *extra,
        ]
    )


def test_short_run_saves_a_model_that_loads_and_predicts(tmp_path, fixture_dir, tiny_base):
    out = tmp_path / "run"
    assert _train(fixture_dir, tiny_base, out) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["test_n"] == 1 and metrics["test_mae"] >= 0
    assert (out / "README.md").read_text().count("mae") > 0
    assert sorted(p.name for p in out.glob("checkpoint-*"))  # a checkpoint per epoch, best kept

    model, processor, settings = load_age_model(str(out))
    assert settings.image_size == 32 and settings.head == "regression"
    assert settings.age_mean == pytest.approx(json.loads((out / "config.json").read_text())["agecheck"]["age_mean"])
    assert len(settings.calibration_mae) == len(settings.calibration_edges) > 0
    batch = processor(images=[Image.open(next((fixture_dir / "images").glob("utk_*")))], return_tensors="pt")
    with torch.inference_mode():
        age, _ = outputs_to_age(model(**batch).logits, settings)
    assert np.isfinite(age).all()


def test_resume_from_last_checkpoint_continues_training(tmp_path, fixture_dir, tiny_base):
    out = tmp_path / "run"
    assert (
        _train(
            fixture_dir,
            tiny_base,
            out,
            "--max-steps",
            "4",
            "--save-strategy",
            "steps",
            "--eval-strategy",
            "steps",
            "--save-steps",
            "2",
            "--eval-steps",
            "2",
        )
        == 0
    )
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (
        _train(
            fixture_dir,
            tiny_base,
            out,
            "--max-steps",
            "6",
            "--save-strategy",
            "steps",
            "--eval-strategy",
            "steps",
            "--save-steps",
            "2",
            "--eval-steps",
            "2",
            "--resume-from-checkpoint",
            "last",
        )
        == 0
    )
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert state["log_history"][0]["step"] <= 2  # history from the first run was carried over


@pytest.mark.parametrize("head", ["gaussian", "bins"])
def test_other_heads_train(tmp_path, fixture_dir, head):
    base = make_tiny_model(tmp_path / "base", image_size=32)
    out = tmp_path / "run"
    assert _train(fixture_dir, base, out, "--head", head, "--max-steps", "2", "--freeze-backbone-epochs", "1") == 0
    _, _, settings = load_age_model(str(out))
    assert settings.head == head


def test_loss_decreases_towards_the_truth():
    settings = AgeSettings(head="regression", age_mean=30, age_std=10)
    ages = torch.tensor([20.0, 40.0])
    near = age_loss(torch.tensor([[-0.9], [0.9]]), ages, settings)
    far = age_loss(torch.tensor([[1.0], [-1.0]]), ages, settings)
    assert near < far
    bins = AgeSettings(head="bins")
    logits_right = torch.full((1, 101), -5.0)
    logits_right[0, 30] = 5.0
    logits_wrong = torch.full((1, 101), -5.0)
    logits_wrong[0, 70] = 5.0
    assert age_loss(logits_right, torch.tensor([30.0]), bins) < age_loss(logits_wrong, torch.tensor([30.0]), bins)


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    for option in (
        "--data",
        "--base-model",
        "--head",
        "--image-size",
        "--freeze-backbone-epochs",
        "--feedback",
        "--push-to-hub",
        "--max-eval-samples",
        "--help-all",
    ):
        assert option in text


def test_photos_are_detected_and_cropped_like_serving(tmp_path, fixture_dir, tiny_base):
    out = tmp_path / "run"
    assert _train(fixture_dir, tiny_base, out, "--faces", "detect", "--max-steps", "2", "--crop-margin", "0.3") == 0
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["faces"] == "detect"
    assert summary["photos_without_face"] <= 2  # YuNet finds 16/16 fixture faces at its default threshold
    _, _, settings = load_age_model(str(out))
    assert settings.faces == "detect" and settings.crop_margin == pytest.approx(0.3)


def test_feedback_store_corrections_override_labels(tmp_path, fixture_dir, tiny_base):
    from age_model.data import load_age_dataset
    from age_model.feedback import FeedbackStore

    data, _ = load_age_dataset(fixture_dir)
    row = next(r for r in data["train"].select_columns(["id", "age", "source"]) if 30 <= r["age"] <= 60)
    url = f"sqlite:///{tmp_path}/fb.db"
    store = FeedbackStore(url)
    store.register_samples([{"sample_id": row["id"], "source": row["source"], "original_label": row["age"]}])
    store.add_vote(row["id"], row["age"] + 3, "alice")  # same side of 18 and 25: one vote settles it
    store.close()

    out = tmp_path / "run"
    assert _train(fixture_dir, tiny_base, out, "--feedback", url, "--max-steps", "2") == 0
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["feedback"]["corrected"] == 1 and summary["feedback"]["changed"] == 1
    assert "feedback" in (out / "README.md").read_text().lower()


def _csv_source(root: Path, images: list[Path], ages: list[int], splits: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    lines = ["file_name,real_age,split"]
    for image, age, split in zip(images, ages, splits):
        (root / "images" / image.name).write_bytes(image.read_bytes())
        lines.append(f"{image.name},{age},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_two_sources_in_one_run_report_per_source_and_reframe_the_second(tmp_path, fixture_dir, tiny_base):
    import csv

    rows = list(csv.DictReader((fixture_dir / "labels.csv").open()))
    utk = [r for r in rows if r["source"] == "utkface"]
    fgnet = [r for r in rows if r["source"] == "fgnet"]
    first = _csv_source(
        tmp_path / "first",
        [fixture_dir / "images" / r["file_name"] for r in utk[:6]],
        [int(r["real_age"]) for r in utk[:6]],
        ["train"] * 4 + ["valid", "test"],
    )
    second = _csv_source(
        tmp_path / "second",
        [fixture_dir / "images" / r["file_name"] for r in fgnet],
        [int(r["real_age"]) for r in fgnet],
        ["train"] * 6 + ["valid"] * 2,
    )
    out = tmp_path / "run"
    assert (
        _train(
            first,
            tiny_base,
            out,
            "--data",
            str(second),
            "--balance",
            "source",
            "--metric-for-best-model",
            "worst_source_mae",
        )
        == 0
    )
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["sources"] == ["first", "second"] and summary["reframed_sources"] == ["second"]
    assert summary["splits_by_source"]["validation"] == {"first": 1, "second": 2}
    evaluation = json.loads((out / "eval_metrics.json").read_text())
    assert {"eval_first_mae", "eval_second_mae", "eval_worst_source_mae"} <= set(evaluation)
    assert evaluation["eval_worst_source_mae"] == max(evaluation["eval_first_mae"], evaluation["eval_second_mae"])
    assert "eval_second_within_spread" in evaluation
    settings = json.loads((out / "config.json").read_text())["agecheck"]
    assert settings["spread_scale"] >= 1.0 and set(settings["spread_coverage"]) == {"first", "second"}
    assert "| second | no test split |" in (out / "README.md").read_text()


def test_balance_weights_give_every_group_the_same_total():
    from age_model.training import balance_weights

    weights = balance_weights(["a", "a", "a", "b"], [10, 12, 40, 30], "source")
    assert weights[:3].sum() == pytest.approx(weights[3]) and weights.sum() == pytest.approx(1)
    by_age = balance_weights(["a", "a", "a", "b"], [10, 12, 40, 30], "source-age")
    assert by_age[0] == by_age[1] and by_age[2] == pytest.approx(by_age[0] * 2)
    assert balance_weights(["a"], [3], "none") is None


def test_card_records_hyperparameters_labels_a_smoke_run_and_publishes_no_local_paths(tmp_path, fixture_dir, tiny_base):
    out = tmp_path / "run"
    assert (
        _train(
            fixture_dir,
            tiny_base.resolve(),
            out,
            "--max-steps",
            "2",
            "--max-train-samples",
            "8",
            "--max-eval-samples",
            "4",
        )
        == 0
    )
    card = (out / "README.md").read_text()
    assert "Smoke run, not a usable model" in card and "- smoke-run" in card
    assert "| steps trained | 2 |" in card and "| peak learning rate | 0.001 |" in card
    assert "| training images cap | 8 |" in card and "| precision | fp32 |" in card
    for name in ("README.md", "config.json", "data_summary.json", "training_options.json"):
        text = (out / name).read_text()
        for local in (str(tiny_base.resolve()), str(fixture_dir.resolve()), str(tmp_path)):
            assert local not in text, f"{name} publishes the local path {local}"
    options = json.loads((out / "training_options.json").read_text())
    assert options["smoke_run"] is True and options["steps_trained"] == 2


def test_a_full_run_card_is_not_labelled_a_smoke_run(tmp_path, fixture_dir, tiny_base):
    out = tmp_path / "run"
    assert _train(fixture_dir, tiny_base, out, "--num-train-epochs", "1") == 0
    card = (out / "README.md").read_text()
    assert "Smoke run" not in card and "smoke-run" not in card
    assert "| epochs trained | 1.0 |" in card
