"""The ID-check rule, in one place: the app, the CLI, the benchmarks and the metric all use it.

A checkout asks for ID when the estimate, or its plausible range (estimate minus spread), reaches
below the threshold (Challenge 25: ask anyone who looks under 25). An estimate supports a cashier's
decision; it never replaces it.
"""

from __future__ import annotations

import numpy as np

ASK_FOR_ID = "ask for ID"
NO_ID_NEEDED = "no ID needed"
DEFAULT_THRESHOLD = 25.0
THRESHOLD_RANGE = (16.0, 30.0)  # the thresholds the page offers and the API accepts


def asks_for_id(
    age: float | np.ndarray, spread: float | np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> bool | np.ndarray:
    """True where ID should be asked for: ``age - spread < threshold`` (works on arrays too)."""
    return np.asarray(age) - np.asarray(spread) < threshold if np.ndim(age) else bool(age - spread < threshold)


def verdict(age: float, spread: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The verdict a cashier sees for one face."""
    return ASK_FOR_ID if asks_for_id(age, spread, threshold) else NO_ID_NEEDED


__all__ = ["ASK_FOR_ID", "NO_ID_NEEDED", "DEFAULT_THRESHOLD", "THRESHOLD_RANGE", "asks_for_id", "verdict"]
