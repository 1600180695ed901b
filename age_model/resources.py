"""Where the files agecheck ships beside its code are: in a clone, and after `pip install`.

A clone keeps them at the repository root (``models/agecheck-default``, ``examples``,
``data_cards/templates``); ``pyproject.toml`` installs the same folders, whole, as package data under
``age_model/_shipped/``. Code asks here instead of building paths from ``__file__`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
INSTALLED_DIR = PACKAGE_DIR / "_shipped"  # pyproject.toml's package-dir maps the folders below here


def shipped(repo_path: str, installed_name: str) -> Path:
    """The installed copy of a shipped folder when there is one, else the clone's own."""
    installed = INSTALLED_DIR / installed_name
    return installed if installed.is_dir() else REPO_ROOT / repo_path


DEFAULT_MODEL = shipped("models/agecheck-default", "default_model")
EXAMPLES_DIR = shipped("examples", "examples")
CARD_TEMPLATES_DIR = shipped("data_cards/templates", "card_templates")


def default_model() -> str:
    """The model used when none is named: ``$AGE_MODEL`` if set, else the shipped agecheck-default."""
    return os.environ.get("AGE_MODEL") or str(DEFAULT_MODEL)
