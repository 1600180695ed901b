"""Shared fixtures: the shared data beside the repo, and tiny random age models built on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.feedback_fixtures"]  # store / store_url fixtures over SQLite and PostgreSQL

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))
FIXTURE = SHARED / "data" / "fixture"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set AGECHECK_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def fixture_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "fixture"


def make_tiny_model(folder: Path, head: str = "regression", faces: str = "detect", image_size: int = 64) -> Path:
    """A ResNet with a few thousand random weights, saved like a train.py output."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    from age_model.modeling import AgeSettings, configure_processor

    settings = AgeSettings(head=head, age_mean=35.0, age_std=20.0, faces=faces, image_size=image_size)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=settings.num_outputs(),
        problem_type="regression",
    )
    settings.save_to_config(config)
    model = ResNetForImageClassification(config)
    model.save_pretrained(folder)
    processor = configure_processor(ConvNextImageProcessor(), image_size)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))
