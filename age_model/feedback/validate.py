"""Checks on vote fields, run before any write so a bad input leaves the store untouched."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import InvalidAgeError, InvalidAnnotatorError, InvalidFieldError
from .records import AGE_MAX, AGE_MIN

MAX_NAME = 200


def check_age(age: Any, what: str = "age") -> float:
    """A finite number of years in [AGE_MIN, AGE_MAX]; numeric strings (form fields) accepted."""
    if isinstance(age, bool) or age is None:
        raise InvalidAgeError(f"{what} must be a number of years, got {age!r}")
    if isinstance(age, str):
        try:
            value = float(age.strip())
        except ValueError:
            raise InvalidAgeError(f"{what} must be a number of years, got {age!r}") from None
    elif isinstance(age, numbers.Real):
        value = float(age)
    else:
        raise InvalidAgeError(f"{what} must be a number of years, got {type(age).__name__}")
    if not math.isfinite(value) or not AGE_MIN <= value <= AGE_MAX:
        raise InvalidAgeError(f"{what} must be between {AGE_MIN:g} and {AGE_MAX:g} years, got {age!r}")
    return value


def check_optional_age(age: Any, what: str) -> float | None:
    """Like check_age but None passes: previous labels and model estimates are optional."""
    return None if age is None else check_age(age, what)


def check_annotator(annotator: Any) -> str:
    """A non-empty name (trimmed): every vote must be attributable."""
    if not isinstance(annotator, str) or not annotator.strip():
        raise InvalidAnnotatorError(f"annotator must be a non-empty name, got {annotator!r}")
    name = annotator.strip()
    if len(name) > MAX_NAME:
        raise InvalidAnnotatorError(f"annotator name longer than {MAX_NAME} characters")
    return name


def check_text(value: Any, what: str, *, required: bool = False, max_len: int | None = MAX_NAME) -> str | None:
    """An optional (or required) short string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidFieldError(f"{what} must be a non-empty string")
        return None
    if not isinstance(value, str):
        raise InvalidFieldError(f"{what} must be a string, got {type(value).__name__}")
    value = value.strip()
    if max_len is not None and len(value) > max_len:
        raise InvalidFieldError(f"{what} longer than {max_len} characters")
    return value


def check_consent(consent: Any) -> bool | None:
    """True, False or None (not asked); anything else is ambiguous and refused."""
    if consent is None or isinstance(consent, bool):
        return consent
    raise InvalidFieldError(f"consent must be True, False or None, got {consent!r}")
