"""What the app's tabs share: the loaded model (or why there is none), the feedback store, the options."""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "models" / "agecheck-default"
DEFAULT_STORE = "sqlite:///feedback_data/feedback.db"

HOW_TO_GET_A_MODEL = (
    "Train one: `python train.py --data ../shared/data/utkface --base-model ../shared/weights/efficientnet-lite0 "
    "--image-size 160 --output-dir runs/utk`, then start the app with `python app.py --model runs/utk` "
    "(or set `AGE_MODEL`). A Hugging Face Hub model id works too."
)


def resolve_model(cli_value: str | None) -> str:
    """`--model` beats the `AGE_MODEL` environment variable beats the model shipped in the repo."""
    return cli_value or os.environ.get("AGE_MODEL") or str(DEFAULT_MODEL)


@dataclass
class AppState:
    """Loaded once at start-up; every request reads it."""

    model: str
    threshold: float = 25.0
    store_url: str = DEFAULT_STORE
    predictor: Any = None
    model_error: str | None = None
    store: Any = None
    store_error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model: str, store_url: str = DEFAULT_STORE, threshold: float = 25.0) -> "AppState":
        """Load what can be loaded; what cannot is explained in the page instead of crashing the app."""
        state = cls(model=model, store_url=store_url, threshold=threshold)
        try:
            from age_model.predictor import AgePredictor

            state.predictor = AgePredictor(model)
            state.metrics = _read_metrics(model)
        except Exception as error:  # any load failure: the page says what to do
            state.model_error = f"{type(error).__name__}: {error}".splitlines()[0]
            logger.error("No model loaded from %s: %s", model, state.model_error)
        try:
            from age_model.feedback import FeedbackStore

            state.store = FeedbackStore(store_url)
        except Exception as error:
            state.store_error = f"{type(error).__name__}: {error}".splitlines()[0]
            logger.error("Feedback store %s unavailable: %s", store_url, state.store_error)
        return state

    @property
    def model_version(self) -> str:
        return Path(self.model).name if Path(self.model).exists() else self.model

    def require_predictor(self) -> Any:
        if self.predictor is None:
            raise gr.Error(f"No age model is loaded ({self.model_error}). {HOW_TO_GET_A_MODEL}")
        return self.predictor

    def require_store(self) -> Any:
        if self.store is None:
            raise gr.Error(f"The feedback store is not available ({self.store_error}). Start the app with --store URL.")
        return self.store

    def model_banner(self) -> str:
        if self.predictor is None:
            return f"### No age model loaded\nTried `{self.model}`: {self.model_error}\n\n{HOW_TO_GET_A_MODEL}"
        settings = self.predictor.settings
        mae = self.metrics.get("test_mae")
        accuracy = f" Test MAE {mae:.1f} years." if isinstance(mae, (int, float)) else ""
        return (f"Model `{self.model_version}` ({Path(settings.base_model).name or 'unknown'} backbone, {settings.head} head)."
                f"{accuracy} The ± is {spread_meaning(self.predictor.spread_basis)}. "
                "An estimate supports a cashier's decision to ask for ID; it never replaces it.")

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.predictor is not None else "degraded", "model": self.model,
                "model_loaded": self.predictor is not None, "model_error": self.model_error,
                "store": self.store_url if self.store is not None else None, "store_error": self.store_error}


def spread_meaning(basis: str) -> str:
    """The predictor's spread basis (e.g. ``calibration+flip``) in words for the page."""
    parts = {
        "head": "the model's own uncertainty",
        "calibration": "the typical error the model made at that age on held-out faces",
        "flip": "how much the estimate changes when the photo is mirrored",
    }
    words = [parts[p] for p in basis.split("+") if p in parts]
    if not words:
        return "a fixed 10 years: this model carries no uncertainty calibration"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _read_metrics(model: str) -> dict[str, Any]:
    path = Path(model) / "test_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
