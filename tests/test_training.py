"""A short real training run on the fixture with a tiny random ResNet: it saves, loads, predicts and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from age_model.modeling import AgeSettings, load_age_model, outputs_to_age
from age_model.training import age_loss
from tests.conftest import make_tiny_model

import train


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("base"), image_size=32)


def _train(data: Path, base: Path, out: Path, *extra: str) -> int:
    return train.main([
        "--data", str(data), "--base-model", str(base), "--output-dir", str(out), "--image-size", "32",
        "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "8", "--num-train-epochs", "2",
        "--learning-rate", "1e-3", "--logging-steps", "1", "--disable-tqdm", "true", "--seed", "1", *extra,
    ])


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
    assert _train(fixture_dir, tiny_base, out, "--max-steps", "4", "--save-strategy", "steps", "--eval-strategy", "steps",
                  "--save-steps", "2", "--eval-steps", "2") == 0
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert _train(fixture_dir, tiny_base, out, "--max-steps", "6", "--save-strategy", "steps", "--eval-strategy", "steps",
                  "--save-steps", "2", "--eval-steps", "2", "--resume-from-checkpoint", "last") == 0
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
    for option in ("--data", "--base_model", "--head", "--image_size", "--freeze_backbone_epochs", "--feedback", "--push_to_hub"):
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
