"""Publishing without the Hub: dry-run folders load back, failures give one clear message and keep files local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import CommitScheduler, ModelCard, constants
from huggingface_hub.errors import OfflineModeIsEnabled

from age_model import hub
from age_model.cards import render_feedback_card
from tests.conftest import REPO_ROOT, make_tiny_model

# the model, its processor, the regenerated card and the metric records behind it; no checkpoints or logs
MODEL_UPLOAD = {
    "README.md",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "test_metrics.json",
    "eval_metrics.json",
    "data_summary.json",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny train.py-like run: model files, metrics JSON and the clutter that must not be uploaded."""
    run = make_tiny_model(tmp_path_factory.mktemp("run"))
    (run / "test_metrics.json").write_text(
        json.dumps({"test_mae": 6.4821, "test_cs5": 0.5512, "test_mae_65plus": 11.3, "test_n": 16})
    )
    (run / "eval_metrics.json").write_text(json.dumps({"eval_mae": 6.9, "eval_loss": 0.4}))
    summary = {
        "name": "utkface",
        "source": "../shared/data/fixture",
        "target": "real",
        "splits": {"train": 8, "validation": 4, "test": 4},
        "feedback": None,
    }
    (run / "data_summary.json").write_text(json.dumps(summary))
    (run / "README.md").write_text("---\nlicense: apache-2.0\n---\nTrainer's card\n")
    (run / "checkpoint-10").mkdir()
    (run / "checkpoint-10" / "optimizer.pt").write_bytes(b"0" * 64)
    (run / "training_args.bin").write_bytes(b"0")
    (run / "runs").mkdir()
    (run / "runs" / "events.out.tfevents").write_bytes(b"0")
    return run


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny feedback export: a parquet split with an Image feature, its card, and a live store beside it."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    export = tmp_path_factory.mktemp("export")
    features = Features(
        {"image": Image(), "age": Value("float32"), "sample_id": Value("string"), "annotator": Value("string")}
    )
    rows = {
        "image": [PILImage.new("RGB", (8, 8), color) for color in ("red", "green", "blue")],
        "age": [21.0, 34.5, 70.0],
        "sample_id": ["a1", "b2", "c3"],
        "annotator": ["alice", "bob", "alice"],
    }
    (export / "data").mkdir()
    Dataset.from_dict(rows, features=features).to_parquet(str(export / "data" / "train-00000-of-00001.parquet"))
    render_feedback_card({"num_samples": 3, "num_votes": 3, "annotators": {"alice": 2, "bob": 1}}).save(
        export / "README.md"
    )
    (export / "feedback.db").write_bytes(b"SQLite format 3\0")
    (export / "feedback.db-wal").write_bytes(b"")
    return export


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: None)


# ---------------------------------------------------------------- model


def test_model_dry_run_is_exactly_the_upload_and_loads(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    out = tmp_path / "out"
    assert hub.main(["push-model", str(run_dir), "--repo-id", "acme/agecheck-tiny", "--dry-run", str(out)]) == 0
    assert files_in(out) == MODEL_UPLOAD
    assert f"{len(MODEL_UPLOAD)} files" in capsys.readouterr().out
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.agecheck["head"] == "regression"
    assert AutoImageProcessor.from_pretrained(out).size
    card = ModelCard.load(out / "README.md")
    mae = next(r for r in card.data.eval_results if r.metric_type == "mae" and r.dataset_split == "test")
    assert mae.metric_value == 6.4821 and card.data.model_name == "acme/agecheck-tiny"
    assert "Trainer's card" not in card.text


def test_dry_run_refuses_a_folder_with_files(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "old.txt").write_text("x")
    assert hub.main(["push-model", str(run_dir), "--repo-id", "acme/x", "--dry-run", str(tmp_path)]) == 1
    assert "not an empty folder" in capsys.readouterr().err


def test_wrong_run_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert hub.main(["push-model", str(tmp_path), "--repo-id", "acme/x", "--token", "hf_x"]) == 1
    assert "model.safetensors" in capsys.readouterr().err


def test_missing_token_gives_one_clear_message(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    no_token(monkeypatch)
    before = files_in(run_dir)
    api = mock.MagicMock()
    monkeypatch.setattr(hub, "HfApi", lambda **_: api)
    assert hub.main(["push-model", str(run_dir), "--repo-id", "acme/agecheck-tiny"]) == 2
    err = capsys.readouterr().err
    assert "no Hugging Face token" in err and "hf auth login" in err and "HF_TOKEN" in err
    assert str(run_dir.resolve()) in err and "Traceback" not in err
    assert not api.mock_calls and files_in(run_dir) == before


def test_offline_hub_gives_one_clear_message(run_dir: Path) -> None:
    api = mock.MagicMock()
    api.create_repo.side_effect = OfflineModeIsEnabled("offline mode is enabled")
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE") as caught:
        hub.push_model(run_dir, "acme/agecheck-tiny", token="hf_x", api=api)
    assert "everything stays local in " + str(run_dir.resolve()) in str(caught.value)
    api.upload_folder.assert_not_called()


def test_unreachable_hub_gives_one_clear_message(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A real HfApi against a closed local port: the connection error becomes the message, exit code 2."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    from huggingface_hub import HfApi

    monkeypatch.setattr(hub, "HfApi", lambda **kw: HfApi(endpoint="http://127.0.0.1:9", **kw))
    assert hub.main(["push-model", str(run_dir), "--repo-id", "acme/agecheck-tiny", "--token", "hf_x"]) == 2
    err = capsys.readouterr().err
    assert "could not be reached" in err and "Traceback" not in err and str(run_dir.resolve()) in err


@pytest.mark.parametrize(
    "status, says", [(401, "rejected the token"), (403, "may not write"), (500, "answered HTTP 500")]
)
def test_hub_refusals_are_explained(run_dir: Path, status: int, says: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    api = mock.MagicMock()
    response = mock.Mock(status_code=status, headers={}, request=mock.Mock())
    api.upload_folder.side_effect = HfHubHTTPError(f"{status} Client Error", response=response)
    with pytest.raises(hub.HubError, match=says) as caught:
        hub.push_model(run_dir, "acme/agecheck-tiny", token="hf_x", api=api)
    assert "No files were uploaded" in str(caught.value)


@pytest.mark.parametrize("flag, private", [([], True), (["--private"], True), (["--public"], False)])
def test_push_uploads_the_staged_folder(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], private: bool
) -> None:
    uploaded: dict[str, set[str]] = {}
    api = mock.MagicMock()
    api.upload_folder.side_effect = lambda **kw: uploaded.setdefault("files", files_in(Path(kw["folder_path"])))
    monkeypatch.setattr(hub, "HfApi", lambda **_: api)
    assert hub.main(["push-model", str(run_dir), "--repo-id", "acme/agecheck-tiny", "--token", "hf_x", *flag]) == 0
    api.create_repo.assert_called_once_with(
        "acme/agecheck-tiny", token="hf_x", private=private, repo_type="model", exist_ok=True
    )
    assert uploaded["files"] == MODEL_UPLOAD


# ---------------------------------------------------------------- feedback dataset


def test_feedback_dry_run_loads_with_datasets(export_dir: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from PIL import Image

    out = tmp_path / "out"
    assert (
        hub.main(["push-feedback", str(export_dir), "--repo-id", "acme/agecheck-feedback", "--dry-run", str(out)]) == 0
    )
    assert files_in(out) == {"README.md", "data/train-00000-of-00001.parquet"}  # the live store stays behind
    data = load_dataset(str(out))
    assert data["train"].num_rows == 3 and data["train"]["age"] == [21.0, 34.5, 70.0]
    assert isinstance(data["train"][0]["image"], Image.Image)
    assert (out / "README.md").read_text() == (export_dir / "README.md").read_text()


def test_feedback_export_without_card_gets_one(export_dir: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    bare = tmp_path / "bare"
    (bare / "data").mkdir(parents=True)
    parquet = export_dir / "data" / "train-00000-of-00001.parquet"
    (bare / "data" / parquet.name).write_bytes(parquet.read_bytes())
    out = Path(hub.push_feedback(bare, "acme/fb", dry_run=tmp_path / "out"))
    assert "| rows in this export | 3 |" in (out / "README.md").read_text()
    assert load_dataset(str(out))["train"].num_rows == 3


def test_real_feedback_export_goes_through(tmp_path: Path) -> None:
    """The feedback module's own export (samples and votes, consent rules, its card from render_feedback_card)."""
    from datasets import load_dataset

    from age_model.feedback import FeedbackStore
    from age_model.publish import export_feedback
    from tests.feedback_support import make_image

    with FeedbackStore(f"sqlite:///{tmp_path}/store/feedback.db") as store:
        first = store.add_upload(make_image(1), 23, "alice", consent=True)
        store.add_upload(make_image(2), 61, "alice", consent=True)
        store.add_upload(make_image(3), 16, "bob", consent=False)
        store.add_vote(first.sample_id, 27, "bob")
        export_feedback(store, tmp_path / "export")
    out = Path(hub.push_feedback(tmp_path / "export", "acme/fb", dry_run=tmp_path / "out"))
    assert files_in(out) == {"README.md", "data/train-00000-of-00001.parquet", "votes/votes-00000-of-00001.parquet"}
    assert sorted(load_dataset(str(out))["train"]["age"]) == [25.0, 61.0]
    assert load_dataset("parquet", data_files=str(out / "votes" / "*.parquet"))["train"].num_rows == 3
    text = (out / "README.md").read_text()
    assert "| rows in this export | 2 |" in text and "| refused | 1 |" in text and "pairs of votes: 1" in text


def test_feedback_push_uses_a_private_dataset_repo(export_dir: Path) -> None:
    api = mock.MagicMock()
    api.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/datasets/acme/fb/commit/1")
    assert hub.push_feedback(export_dir, "acme/fb", token="hf_x", api=api).endswith("/commit/1")
    api.create_repo.assert_called_once_with("acme/fb", token="hf_x", private=True, repo_type="dataset", exist_ok=True)
    assert api.upload_folder.call_args.kwargs["repo_type"] == "dataset"


def test_feedback_cli_offline_exits_2_without_traceback(export_dir: Path) -> None:
    """The real command line, as a user runs it: HF_HUB_OFFLINE=1 and a token."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_fake", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "age_model.hub", "push-feedback", str(export_dir), "--repo-id", "acme/fb"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and str(export_dir.resolve()) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- scheduled pushes


def test_feedback_scheduler_targets_a_private_dataset(tmp_path: Path) -> None:
    api = mock.MagicMock()
    api.create_repo.return_value = mock.Mock(repo_id="acme/fb")
    scheduler = hub.make_feedback_scheduler(tmp_path / "feedback", "acme/fb", every_minutes=30, hf_api=api)
    try:
        assert isinstance(scheduler, CommitScheduler) and scheduler.every == 30
        api.create_repo.assert_called_once_with(repo_id="acme/fb", private=True, repo_type="dataset", exist_ok=True)
        assert "*.db" in scheduler.ignore_patterns and (tmp_path / "feedback").is_dir()
    finally:
        scheduler.stop()


def test_feedback_scheduler_without_token_or_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_token(monkeypatch)
    with pytest.raises(hub.HubError, match="hf auth login"):
        hub.make_feedback_scheduler(tmp_path, "acme/fb", 5)
    api = mock.MagicMock()
    api.create_repo.side_effect = OfflineModeIsEnabled("offline")
    with pytest.raises(hub.HubError, match="stays local in") as caught:
        hub.make_feedback_scheduler(tmp_path, "acme/fb", 5, hf_api=api)
    assert "--dry-run" not in str(caught.value)  # the app has no command line to add it to


def test_fp16_staging_halves_weights_and_loads_back_as_fp32(tmp_path):
    import torch

    from age_model.hub import main as hub_main
    from age_model.modeling import load_age_model
    from tests.conftest import make_tiny_model

    run = make_tiny_model(tmp_path / "run")
    (run / "test_metrics.json").write_text('{"test_mae": 5.5, "test_n": 10}')
    out = tmp_path / "ship"
    assert hub_main(["push-model", str(run), "--repo-id", "org/tiny", "--dry-run", str(out), "--fp16"]) == 0
    assert (out / "model.safetensors").stat().st_size < 0.6 * (run / "model.safetensors").stat().st_size
    assert (out / "test_metrics.json").is_file()
    full, _, _ = load_age_model(str(run))
    half, _, _ = load_age_model(str(out))
    assert next(half.parameters()).dtype == torch.float32
    pixels = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(full(pixel_values=pixels).logits, half(pixel_values=pixels).logits, atol=1e-2)
