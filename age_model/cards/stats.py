"""Numbers from a label file, for the cards: counts per split, age statistics and bands, who is in the data.

Computed from the file itself, never typed, so a card cannot drift from its data.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from age_model.ages import band_labels, band_of
from age_model.data import CONFLICT_TOLERANCE, SOURCE_CODES, SPLIT_ALIASES, SPLITS, duplicate_summary


def read_labels(path: Path) -> list[dict[str, str]]:
    """All rows of a label CSV; cards are computed from the file itself, never from typed numbers."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def split_name(raw: str | None) -> str:
    """Hub split names (train/validation/test) for the CSVs' train/valid/test."""
    return SPLIT_ALIASES.get((raw or "").strip().lower(), (raw or "all").strip().lower())


def decade_of(age: float) -> str:
    return "100+" if age >= 100 else f"{int(age // 10) * 10}-{int(age // 10) * 10 + 9}"


def age_stats(ages: Iterable[float]) -> dict[str, float]:
    """n, min, median, max, mean: the summary train.py also writes into data_summary.json."""
    values = sorted(float(a) for a in ages)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": values[0],
        "median": statistics.median(values),
        "max": values[-1],
        "mean": statistics.fmean(values),
    }


def age_band_counts(ages: Iterable[float]) -> dict[str, int]:
    """Count per Challenge-25 band, in band order; train.py can put it into data_summary['age_bands']."""
    counts = Counter(band_of(float(a)) for a in ages)
    return {label: counts.get(label, 0) for label in band_labels()}


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def distribution(
    ages_by_split: Mapping[str, list[float]],
    key: Callable[[float], str],
    order: list[str],
    keep_empty: bool = False,
) -> list[dict[str, Any]]:
    """Rows of (label, count and share overall and per split) for a binning of ages."""
    total = sum(len(v) for v in ages_by_split.values())
    counts = {split: Counter(key(a) for a in ages) for split, ages in ages_by_split.items()}
    rows = []
    for label in order:
        per_split = {split: counts[split].get(label, 0) for split in ages_by_split}
        count = sum(per_split.values())
        if count or keep_empty:
            shares = {split: per_split[split] / max(len(ages_by_split[split]), 1) for split in ages_by_split}
            rows.append(
                {
                    "label": label,
                    "count": count,
                    "share": count / max(total, 1),
                    "splits": per_split,
                    "split_shares": shares,
                }
            )
    return rows


def decade_order(ages: Iterable[float]) -> list[str]:
    return sorted({decade_of(a) for a in ages}, key=lambda d: 1000 if d == "100+" else int(d.split("-")[0]))


def share(ages: list[float], test: Callable[[float], bool]) -> float:
    return sum(1 for a in ages if test(a)) / max(len(ages), 1)


def label_summary(rows: list[dict[str, str]], age_column: str = "real_age") -> dict[str, Any]:
    """Splits, age statistics, decade and band distributions and the headline skew figures of a label file."""
    by_split: dict[str, list[float]] = {}
    for row in rows:
        by_split.setdefault(split_name(row.get("split")), []).append(float(row[age_column]))
    by_split = {s: by_split[s] for s in [*SPLITS, *sorted(by_split)] if s in by_split}
    ages = [a for split_ages in by_split.values() for a in split_ages]
    decades = distribution(by_split, decade_of, decade_order(ages))
    largest = max(decades, key=lambda row: row["count"])
    return {
        "n": len(ages),
        "splits": {split: len(v) for split, v in by_split.items()},
        "stats": {"all": age_stats(ages), **{split: age_stats(v) for split, v in by_split.items()}},
        "decades": decades,
        "bands": distribution(by_split, band_of, band_labels(), keep_empty=True),
        "largest_decade": largest,
        "shares": {
            "under_10": share(ages, lambda a: a < 10),
            "under_13": share(ages, lambda a: a < 13),
            "under_18": share(ages, lambda a: a < 18),
            "under_25": share(ages, lambda a: a < 25),
            "20_49": share(ages, lambda a: 20 <= a < 50),
            "65_plus": share(ages, lambda a: a >= 65),
        },
    }


def appa_real_extra(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Apparent age next to real age: how far the crowd's guess sits from the truth, per band."""
    real = [float(r["real_age"]) for r in rows]
    apparent = [float(r["apparent_age"]) for r in rows]
    spread = [float(r["apparent_age_std"]) for r in rows]
    per_band: dict[str, list[tuple[float, float]]] = {}
    for r, a, s in zip(real, apparent, spread):
        per_band.setdefault(band_of(r), []).append((a - r, s))
    return {
        "apparent_stats": age_stats(apparent),
        "apparent_decades": {
            row["label"]: row for row in distribution({"all": apparent}, decade_of, decade_order(apparent))
        },
        "mean_abs_gap": statistics.fmean(abs(a - r) for a, r in zip(apparent, real)),
        "mean_gap": statistics.fmean(a - r for a, r in zip(apparent, real)),
        "vote_std": age_stats(spread),
        "band_gaps": [
            {
                "label": band,
                "n": len(per_band.get(band, [])),
                "share": len(per_band.get(band, [])) / max(len(real), 1),
                "mean_gap": statistics.fmean(g for g, _ in per_band[band]) if per_band.get(band) else float("nan"),
                "mean_std": statistics.fmean(s for _, s in per_band[band]) if per_band.get(band) else float("nan"),
            }
            for band in band_labels()
        ],
    }


def attribute_counts(rows: list[dict[str, str]], source: str) -> dict[str, list[dict[str, Any]]]:
    """Per attribute the source codes (``data.SOURCE_CODES``): how many rows carry each value, and their share."""
    n = max(len(rows), 1)
    out = {}
    for column, names in SOURCE_CODES[source].items():
        counts = Counter(r.get(column, "") for r in rows)
        out[column] = [
            {"label": name, "count": counts.get(code, 0), "share": counts.get(code, 0) / n}
            for code, name in names.items()
        ]
    return out


def utkface_extra(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The file-name attributes (gender, race) that show who is in the data and who is missing."""
    counts = attribute_counts(rows, "utkface")
    return {
        "genders": counts["gender"],
        "races": counts["race"],
        "race_missing": sum(1 for r in rows if not (r.get("race") or "").strip()),
    }


def aaf_extra(rows: list[dict[str, str]]) -> dict[str, Any]:
    """AAF's one attribute besides age: gender (0 female, 1 male in its own annotation files)."""
    return {"genders": attribute_counts(rows, "aaf")["gender"]}


def duplicate_facts(
    labels: Path, rows: list[dict[str, str]], image_column: str = "file_name", age_column: str = "real_age"
) -> dict[str, Any] | None:
    """Near-duplicate groups (same sha256 or same dHash) of a label file's images, when they lie in ``images/``
    beside it (else None: the card leaves the section out). Computed, never typed: see age_model.data."""
    images = Path(labels).parent / "images"
    if not images.is_dir() or not rows:
        return None
    table = [
        {"image": str(images / r[image_column]), "age": float(r[age_column]), "split": split_name(r.get("split"))}
        for r in rows
    ]
    return duplicate_summary(table, CONFLICT_TOLERANCE)
