"""What the app's tabs share: the loaded model (or why there is none), the feedback store, the options."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from age_model.feedback.urls import DEFAULT_URL
from age_model.predictor import HOW_TO_GET_A_MODEL, AgePredictor, load_predictor
from age_model.ui.errors import user_error

if TYPE_CHECKING:
    from age_model.feedback import FeedbackStore

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """Loaded once at start-up; every request reads it."""

    model: str
    threshold: float = 25.0
    store_url: str = DEFAULT_URL
    predictor: AgePredictor | None = None
    model_error: str | None = None
    store: FeedbackStore | None = None
    store_error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    upload_folder: Path | None = None  # this server's private Gradio upload/cache folder
    stoppers: list[Callable[[float], bool]] = field(default_factory=list)  # background work to stop at shutdown
    pseudonym_key: bytes = field(default_factory=lambda: pseudonym_key(), repr=False)

    @classmethod
    def load(cls, model: str, store_url: str = DEFAULT_URL, threshold: float = 25.0) -> "AppState":
        """Load what can be loaded; what cannot is explained in the page instead of crashing the app."""
        state = cls(model=model, store_url=store_url, threshold=threshold)
        try:
            state.predictor = load_predictor(model)
            state.metrics = _read_metrics(model)
        except Exception as error:  # any load failure: the page says what to do
            state.model_error = f"{type(error).__name__}: {error}".splitlines()[0]
            logger.error("No model loaded from %s: %s", model, state.model_error)
        try:
            from age_model.feedback import FeedbackStore

            state.store = FeedbackStore(store_url)
        except Exception as error:
            state.store_error = f"{type(error).__name__}: {error}".splitlines()[0]
            state.store_error = redact(state.store_error)
            logger.error("Feedback store %s unavailable: %s", redact(store_url), state.store_error)
        return state

    @property
    def model_version(self) -> str:
        return Path(self.model).name if Path(self.model).exists() else self.model

    def require_predictor(self) -> AgePredictor:
        if self.predictor is None:
            raise user_error(f"No age model is loaded ({self.model_error}). {HOW_TO_GET_A_MODEL}")
        return self.predictor

    def require_store(self) -> FeedbackStore:
        if self.store is None:
            raise user_error(
                f"The feedback store is not available ({self.store_error}). Start the app with --store URL."
            )
        return self.store

    def model_banner(self) -> str:
        if self.predictor is None:
            return f"### No age model loaded\nTried `{self.model}`: {self.model_error}\n\n{HOW_TO_GET_A_MODEL}"
        settings = self.predictor.settings
        mae = self.metrics.get("test_mae")
        accuracy = f" Test MAE {mae:.1f} years." if isinstance(mae, (int, float)) else ""
        return (
            f"Model `{self.model_version}` ({Path(settings.base_model).name or 'unknown'} backbone, {settings.head} "
            "head)."
            f"{accuracy} The ± is {spread_meaning(self.predictor.spread_basis)}. "
            "An estimate supports a cashier's decision to ask for ID; it never replaces it."
        )

    def health(self) -> dict[str, Any]:
        """What /healthz says: no URL, no credential; ``ok`` only when the model and the store both answer."""
        store_ok, store_error = self.store_reachable()
        ok = self.predictor is not None and store_ok
        return {
            "status": "ok" if ok else "degraded",
            "model": self.model_version,
            "model_loaded": self.predictor is not None,
            "model_error": self.model_error,
            "store": _store_kind(self.store_url),
            "store_reachable": store_ok,
            "store_error": store_error,
        }

    def store_reachable(self) -> tuple[bool, str | None]:
        """Ask the database a trivial question; a store that cannot answer is down."""
        if self.store is None:
            return False, self.store_error or "not opened"
        try:
            from sqlalchemy import text

            with self.store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True, None
        except Exception as error:  # any driver error means the same: the store is down
            return False, redact(f"{type(error).__name__}: {error}".splitlines()[0])

    def shutdown(self, timeout: float = 3.0) -> bool:
        """Stop background work; False when something did not stop in time."""
        return all([stop(timeout) for stop in self.stoppers])


def pseudonym_key() -> bytes:
    """The key of public submitters' pseudonyms: $AGECHECK_PSEUDONYM_KEY keeps them stable across
    restarts; else a fresh random key per run (pseudonyms then change at restart)."""
    configured = os.environ.get("AGECHECK_PSEUDONYM_KEY")
    return configured.encode() if configured else secrets.token_bytes(32)


def redact(text: str | None) -> str | None:
    """``text`` with the password of every database URL in it masked."""
    if not text:
        return text
    return re.sub(r"(\w+(?:\+\w+)?://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def _store_kind(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0] if "://" in url else "unknown"


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
