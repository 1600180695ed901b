"""Ages in one place: the years a label may carry and the age bands every report uses.

The metric module, the cards, the benchmarks and the app all read these tables, so a band edge or a
bound changes everywhere at once. The 18 and 25 edges are where the Challenge-25 question lives.
"""

from __future__ import annotations

import math

AGE_RANGE = (0.0, 120.0)  # ages a person may report or a label may carry, in years (inclusive)

# Reporting bands: (metric key suffix, low inclusive, high exclusive).
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("under13", 0, 13),
    ("13_17", 13, 18),
    ("18_24", 18, 25),
    ("25_34", 25, 35),
    ("35_44", 35, 45),
    ("45_54", 45, 55),
    ("55_64", 55, 65),
    ("65plus", 65, math.inf),
)


def band_label(suffix: str) -> str:
    """A band's readable name from its key suffix: under13 -> 'under 13', 13_17 -> '13-17', 65plus -> '65+'."""
    for name, low, high in AGE_BANDS:
        if name == suffix:
            if low <= 0:
                return f"under {high:g}"
            return f"{low:g}+" if math.isinf(high) else f"{low:g}-{high - 1:g}"
    raise KeyError(f"{suffix!r} is not an age band; the bands are {[name for name, _, _ in AGE_BANDS]}")


def band_labels() -> list[str]:
    """Readable band names in order."""
    return [band_label(name) for name, _, _ in AGE_BANDS]


def band_of(age: float) -> str:
    """The readable name of the band ``age`` falls in."""
    return next(band_label(name) for name, low, high in AGE_BANDS if low <= age < high)


def in_age_range(age: float) -> bool:
    """True for a finite age within AGE_RANGE (NaN and infinities are not ages)."""
    return math.isfinite(age) and AGE_RANGE[0] <= age <= AGE_RANGE[1]


__all__ = ["AGE_RANGE", "AGE_BANDS", "band_label", "band_labels", "band_of", "in_age_range"]
