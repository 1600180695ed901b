"""Is this string a Hugging Face Hub repo id or a local path? One answer for every loader and card.

A model or data set may be named by a local folder or by ``owner/name`` on the Hub. A missing local
folder must be reported as missing, not sent to the Hub, and a local path must never be written into
Hub metadata; both questions are this one check (the Hub's own ``validate_repo_id`` plus "not here").
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id


def is_repo_id(value: str | Path | None) -> bool:
    """True for ``owner/name`` that is a valid Hub id and no existing local path."""
    if not value or isinstance(value, Path):
        return False
    text = str(value)
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or Path(text).expanduser().exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


__all__ = ["is_repo_id"]
