"""Cards for the Hub: the training data's dataset cards, the model card and the feedback dataset card.

Every number on a card is computed from what the card describes (label files, the run's metrics, the
feedback store's stats), so a card cannot drift from its data. The prose lives in Jinja2 templates
under ``data_cards/templates/``; this module only gathers the numbers and picks the Hub metadata.

CLI (regenerates the committed data cards)::

    python -m age_model.cards dataset-card appa-real --labels ../shared/data/appa_real_labels/labels_full.csv --out data_cards/appa-real.md
    python -m age_model.cards dataset-card utkface --labels ../shared/data/utkface/labels.csv --out data_cards/utkface.md
    python -m age_model.cards dataset-card aaf --labels ../shared/data/aaf/labels.csv --out data_cards/aaf.md

Where the images lie beside the label file (``images/``), the card also counts near-duplicate groups and
label conflicts among them (``age_model.data.duplicate_summary``; dHashes are cached under ~/.cache/agecheck).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

if TYPE_CHECKING:
    from age_model.modeling import AgeSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
CARDS_DIR = REPO_ROOT / "data_cards"
TEMPLATES_DIR = CARDS_DIR / "templates"
SHARED_DIR = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))

SPLIT_ALIASES = {"train": "train", "valid": "validation", "val": "validation", "validation": "validation", "test": "test"}
SPLIT_ORDER = ("train", "validation", "test")
# Hub licence ids we may write as-is; anything else becomes `license: other` plus a license_name.
HUB_LICENSES = {"apache-2.0", "mit", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "openrail", "unknown"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class KnownDataset:
    """A training source agecheck documents: how to label it on the Hub and where its terms are."""

    name: str
    pretty_name: str
    labels: str  # default label file, relative to the shared folder
    license_name: str
    license_link: str
    terms: str
    features: tuple[dict[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    extra: Callable[[list[dict[str, str]]], dict[str, Any]] | None = field(default=None, compare=False)


# ---------------------------------------------------------------- numbers from label files


def read_labels(path: Path) -> list[dict[str, str]]:
    """All rows of a label CSV; cards are computed from the file itself, never from typed numbers."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def split_name(raw: str | None) -> str:
    """Hub split names (train/validation/test) for the CSVs' train/valid/test."""
    return SPLIT_ALIASES.get((raw or "").strip().lower(), (raw or "all").strip().lower())


@functools.cache
def metric_bands() -> tuple[tuple[str, float, float], ...]:
    """The age bands the metric module reports MAE for (key suffix, low, high), so cards and metrics agree.

    Imported on first use: the metric module pulls in `evaluate`, which a card renderer rarely needs.
    """
    from age_model.metrics.age_error.age_error import AGE_BANDS

    return tuple(AGE_BANDS)


def band_labels() -> list[str]:
    """Readable band names in order; the Challenge-25 question lives at the 18 and 25 edges."""
    return [band_label(name) for name, _, _ in metric_bands()]


def band_of(age: float) -> str:
    return next(band_label(name) for name, low, high in metric_bands() if low <= age < high)


def decade_of(age: float) -> str:
    return "100+" if age >= 100 else f"{int(age // 10) * 10}-{int(age // 10) * 10 + 9}"


def age_stats(ages: Iterable[float]) -> dict[str, float]:
    """n, min, median, max, mean: the summary train.py also writes into data_summary.json."""
    values = sorted(float(a) for a in ages)
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": values[0], "median": statistics.median(values), "max": values[-1], "mean": statistics.fmean(values)}


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
    ages_by_split: Mapping[str, list[float]], key: Callable[[float], str], order: list[str], keep_empty: bool = False,
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
            rows.append({"label": label, "count": count, "share": count / max(total, 1), "splits": per_split, "split_shares": shares})
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
    by_split = {s: by_split[s] for s in [*SPLIT_ORDER, *sorted(by_split)] if s in by_split}
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
            "under_10": share(ages, lambda a: a < 10), "under_13": share(ages, lambda a: a < 13),
            "under_18": share(ages, lambda a: a < 18), "under_25": share(ages, lambda a: a < 25),
            "20_49": share(ages, lambda a: 20 <= a < 50), "65_plus": share(ages, lambda a: a >= 65),
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
        "apparent_decades": {row["label"]: row for row in distribution({"all": apparent}, decade_of, decade_order(apparent))},
        "mean_abs_gap": statistics.fmean(abs(a - r) for a, r in zip(apparent, real)),
        "mean_gap": statistics.fmean(a - r for a, r in zip(apparent, real)),
        "vote_std": age_stats(spread),
        "band_gaps": [
            {"label": band, "n": len(per_band.get(band, [])), "share": len(per_band.get(band, [])) / max(len(real), 1),
             "mean_gap": statistics.fmean(g for g, _ in per_band[band]) if per_band.get(band) else float("nan"),
             "mean_std": statistics.fmean(s for _, s in per_band[band]) if per_band.get(band) else float("nan")}
            for band in band_labels()
        ],
    }


UTK_GENDERS = {"0": "male", "1": "female"}
UTK_RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def utkface_extra(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The file-name attributes (gender, race) that show who is in the data and who is missing."""
    n = max(len(rows), 1)

    def counted(column: str, names: dict[str, str]) -> list[dict[str, Any]]:
        counts = Counter(r.get(column, "") for r in rows)
        return [{"label": name, "count": counts.get(code, 0), "share": counts.get(code, 0) / n} for code, name in names.items()]

    return {"genders": counted("gender", UTK_GENDERS), "races": counted("race", UTK_RACES),
            "race_missing": sum(1 for r in rows if not (r.get("race") or "").strip())}


AAF_GENDERS = {"0": "female", "1": "male"}


def aaf_extra(rows: list[dict[str, str]]) -> dict[str, Any]:
    """AAF's one attribute besides age: gender (0 female, 1 male in its own annotation files)."""
    n = max(len(rows), 1)
    counts = Counter(r.get("gender", "") for r in rows)
    return {"genders": [{"label": name, "count": counts.get(code, 0), "share": counts.get(code, 0) / n} for code, name in AAF_GENDERS.items()]}


def duplicate_facts(labels: Path, rows: list[dict[str, str]], image_column: str = "file_name", age_column: str = "real_age") -> dict[str, Any] | None:
    """Near-duplicate groups (same sha256 or same dHash) of a label file's images, when they lie in ``images/``
    beside it (else None: the card leaves the section out). Computed, never typed: see age_model.data."""
    images = Path(labels).parent / "images"
    if not images.is_dir() or not rows:
        return None
    from age_model.data import CONFLICT_TOLERANCE, duplicate_summary

    table = [{"image": str(images / r[image_column]), "age": float(r[age_column]), "split": split_name(r.get("split"))} for r in rows]
    return duplicate_summary(table, CONFLICT_TOLERANCE)


CONTRACT_FEATURES = ({"name": "image", "dtype": "image"}, {"name": "age", "dtype": "float32"})
ID_FEATURES = ({"name": "source", "dtype": "string"}, {"name": "id", "dtype": "string"})

KNOWN_DATASETS: dict[str, KnownDataset] = {
    "appa-real": KnownDataset(
        name="appa-real", pretty_name="APPA-REAL", labels="data/appa_real_labels/labels_full.csv",
        license_name="appa-real-research-only", license_link="http://chalearnlap.cvc.uab.es/dataset/26/description/",
        terms="research use only (ChaLearn LAP / APPA-REAL terms); the photos show real people: do not redistribute them",
        features=(*CONTRACT_FEATURES, {"name": "apparent_age_mean", "dtype": "float32"}, {"name": "apparent_age_std", "dtype": "float32"}, *ID_FEATURES),
        tags=("age-estimation", "apparent-age", "faces", "regression"), extra=appa_real_extra,
    ),
    "utkface": KnownDataset(
        name="utkface", pretty_name="UTKFace", labels="data/utkface/labels.csv",
        license_name="utkface-non-commercial-research", license_link="https://susanqq.github.io/UTKFace/",
        terms="non-commercial research only; the copyright of the images stays with their owners: do not redistribute them",
        features=(*CONTRACT_FEATURES, *ID_FEATURES),
        tags=("age-estimation", "faces", "regression"), extra=utkface_extra,
    ),
    "aaf": KnownDataset(
        name="aaf", pretty_name="All-Age-Faces (AAF)", labels="data/aaf/labels.csv",
        license_name="aaf-research-use-citation", license_link="https://github.com/JingchunCheng/All-Age-Faces-Dataset",
        terms="research use only, no explicit licence, citation asked; image copyright stays with the owners: do not redistribute them",
        features=(*CONTRACT_FEATURES, *ID_FEATURES),
        tags=("age-estimation", "faces", "regression"), extra=aaf_extra,
    ),
}


# ---------------------------------------------------------------- templates and metadata


def _years(value: Any) -> str:
    """Ages as people write them: 29, not 29.0; 32.5 stays."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR), trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False,
    )
    env.filters.update(
        thousands=lambda n: f"{int(n):,}",
        pct=lambda x: "n/a" if x is None else f"{100 * float(x):.1f}%",
        years=_years,
        signed=_signed,
        num=lambda x, digits=2: "n/a" if x is None else f"{float(x):.{digits}f}",
    )
    return env


def render_template(name: str, **context: Any) -> str:
    """Render one of data_cards/templates/ (undefined names fail loudly instead of printing nothing)."""
    return _environment().get_template(name).render(**context)


def license_fields(license_text: str | None, known: KnownDataset | None = None) -> dict[str, str]:
    """Hub licence metadata: a Hub licence id as-is, else `other` with a slug name (and link if known)."""
    text = (license_text or "").strip()
    if text.lower() in HUB_LICENSES:
        return {"license": text.lower()}
    if not text and known is None:
        return {"license": "unknown"}
    fields = {"license": "other", "license_name": known.license_name if known and not text else slug(text)}
    if known:
        fields["license_link"] = known.license_link
    return fields


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64] or "custom"


def is_hub_id(value: str | None) -> bool:
    """True for `org/name`; False for local folders (which must not end up in Hub metadata)."""
    return bool(value) and bool(HUB_ID.match(str(value))) and not Path(str(value)).exists()


def display_path(value: str) -> str:
    """A path safe to publish: relative paths as given, absolute ones cut to their last two parts."""
    path = Path(value)
    return value if not path.is_absolute() else f".../{'/'.join(path.parts[-2:])}"


# ---------------------------------------------------------------- dataset cards


def render_dataset_card(name: str, labels: Path) -> DatasetCard:
    """The dataset card of a known training source, computed from its label file."""
    known = KNOWN_DATASETS[name]
    rows = read_labels(labels)
    summary = label_summary(rows)
    card_data = DatasetCardData(
        pretty_name=known.pretty_name,
        **license_fields(None, known),
        task_categories=["image-classification"],
        tags=list(known.tags),
        size_categories=[size_category(summary["n"])],
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in summary["splits"]]}],
        dataset_info={
            "features": [dict(f) for f in known.features],
            "splits": [{"name": s, "num_examples": n} for s, n in summary["splits"].items()],
        },
    )
    extra = known.extra(rows) if known.extra else {}
    content = render_template(
        f"{name}.md.j2", card_data=card_data.to_yaml(), data=summary, known=known,
        labels_file=Path(labels).name, duplicates=duplicate_facts(labels, rows), **extra,
    )
    return DatasetCard(content)


# ---------------------------------------------------------------- model card


def band_label(suffix: str) -> str:
    """Metric key suffix to band label: under13 -> 'under 13', 13_17 -> '13-17', 65plus -> '65+'."""
    if suffix.startswith("under"):
        return f"under {suffix[5:]}"
    if suffix.endswith("plus"):
        return f"{suffix[:-4]}+"
    return suffix.replace("_", "-")


def split_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """`test_mae` -> `mae` for one prefix; non-numeric and non-finite entries (empty bands are NaN) are dropped."""
    return {
        key[len(prefix):]: float(value) for key, value in metrics.items()
        if key.startswith(prefix) and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def band_rows(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """MAE per age band, in band order, for the bands the metrics hold."""
    return [
        {"label": band_label(name), "mae": metrics[f"mae_{name}"]}
        for name, _, _ in metric_bands() if f"mae_{name}" in metrics
    ]


HEADLINE_METRICS = (("mae", "MAE (years)"), ("rmse", "RMSE (years)"), ("cs5", "CS@5 (share within 5 years)"))
TABLE_ONLY_METRICS = (("mae_without_flip_tta", "MAE without flip TTA (years)"),)


def metric_rows(test: Mapping[str, float], validation: Mapping[str, float]) -> list[dict[str, Any]]:
    """The headline metrics side by side for the card's table (None where a split lacks one)."""
    return [
        {"name": name, "pct": key == "cs5", "test": test.get(key), "validation": validation.get(key)}
        for key, name in HEADLINE_METRICS + TABLE_ONLY_METRICS if key in test or key in validation
    ]


def model_index(test: Mapping[str, float], validation: Mapping[str, float], dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """MAE, RMSE and CS@5 as `model-index` results (the Trainer's own card drops MAE)."""
    results = []
    for split, values in (("test", test), ("validation", validation)):
        for metric, metric_name in HEADLINE_METRICS:
            if metric in values:
                results.append(EvalResult(
                    task_type="image-classification", task_name="Age estimation (regression, years)",
                    dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                    metric_type=metric, metric_name=metric_name, metric_value=values[metric],
                ))
    return results


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def base_model_facts(settings: AgeSettings, data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the weights started from, told honestly: Hub id, local folder, or random init."""
    base = settings.base_model or ""
    from_scratch = data_summary.get("from_scratch")
    if from_scratch is None and base and Path(base).is_dir():
        from age_model.modeling import is_config_only

        from_scratch = is_config_only(base)
    return {"base": display_path(base) if base else "", "hub_base": base if is_hub_id(base) and not from_scratch else None, "from_scratch": bool(from_scratch)}


def known_dataset(name: str) -> KnownDataset | None:
    """The documented source a data folder is a copy of: 'utkface', 'UTKFace_crops', 'appa-real-release', ..."""
    normalised = name.lower().replace("_", "-")
    return next((known for key, known in KNOWN_DATASETS.items() if key in normalised), None)


def dataset_facts(data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """Name, Hub id (if any), licence and terms of the training data (each source's when there are several)."""
    sources = [str(s) for s in data_summary.get("sources") or []]
    if len(sources) > 1:
        return _several_sources_facts(data_summary, sources)
    name = str(data_summary.get("name") or "unknown")
    known = known_dataset(name)
    hub_id = data_summary.get("hub_id") or (data_summary.get("source") if is_hub_id(data_summary.get("source")) else None)
    license_text = data_summary.get("license")
    return {
        "name": name, "known": known, "hub_id": hub_id,
        "pretty_name": known.pretty_name if known else name,
        "source": display_path(str(data_summary.get("source") or "")),
        "license": license_text or (known.terms if known else "not recorded"),
        "license_fields": license_fields(license_text, known),
    }


def _several_sources_facts(data_summary: Mapping[str, Any], sources: list[str]) -> dict[str, Any]:
    """A run on several sources: every source's name and terms; the card's licence is the strictest, "other"."""
    knowns = [known_dataset(name) for name in sources]
    pretty = [known.pretty_name if known else name for name, known in zip(sources, knowns)]
    terms = "; ".join(f"{p}: {known.terms if known else 'not recorded'}" for p, known in zip(pretty, knowns))
    return {
        "name": "+".join(sources), "known": None, "hub_id": None, "pretty_name": " + ".join(pretty),
        "source": display_path(str(data_summary.get("source") or "")), "license": terms,
        "license_fields": {"license": "other", "license_name": slug("-".join(k.license_name if k else n for n, k in zip(sources, knowns)))},
        "sources": [{"name": n, "pretty_name": p, "known": k} for n, p, k in zip(sources, pretty, knowns)],
    }


def source_rows(metrics: Mapping[str, float], sources: Sequence[str], split_sources: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per-source figures of a multi-source run for the card: test and validation MAE, share within ±.

    A split that holds one source only has no per-source keys: its pooled figures are that source's.
    """
    split_sources = split_sources or {}
    rows = []
    for source in sources:
        row: dict[str, Any] = {"source": source}
        for split, summary_name in (("test", "test"), ("eval", "validation")):
            only = list(split_sources.get(summary_name) or {}) == [source]
            for key in ("mae", "minors_passed_rate", "within_spread", "n"):
                row[f"{split}_{key}"] = metrics.get(f"{split}_{source}_{key}", metrics.get(f"{split}_{key}") if only else None)
        rows.append(row)
    return rows


def render_model_card(
    run_dir: Path,
    metrics: dict[str, float],
    settings: AgeSettings,
    data_summary: dict,
    hub_model_id: str | None = None,
) -> ModelCard:
    """The model card of a trained run: metrics into `model-index`, framing, head, intended use and limits."""
    data_summary = data_summary or {}
    test, validation = split_metrics(metrics, "test_"), split_metrics(metrics, "eval_")
    data, base = dataset_facts(data_summary), base_model_facts(settings, data_summary)
    model_name = hub_model_id or Path(run_dir).name
    datasets = [d for d in (data["hub_id"], (data_summary.get("feedback") or {}).get("hub_id")) if d]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base["hub_base"],
        datasets=datasets or None,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["age-estimation", "regression", "faces", "agecheck", f"head-{settings.head}"],
        metrics=["mae"],
        eval_results=model_index(test, validation, data["hub_id"] or data["name"], data["pretty_name"]) or None,
        **data["license_fields"],
    )
    bands = band_rows(test)
    config = read_config(run_dir)
    content = render_template(
        "model_card.md.j2",
        card_data=card_data.to_yaml(), model_name=model_name, hub_model_id=hub_model_id, settings=settings,
        architecture=(config.get("architectures") or ["unknown"])[0], model_type=config.get("model_type", "unknown"),
        base=base, data=data, summary=data_summary, splits={split_name(k): v for k, v in (data_summary.get("splits") or {}).items()},
        age_stats={split_name(k): v for k, v in (data_summary.get("age_stats") or {}).items()},
        age_bands=data_summary.get("age_bands") or {}, feedback=data_summary.get("feedback"),
        test=test, validation=validation, metric_rows=metric_rows(test, validation), bands=bands, worst=sorted(bands, key=lambda r: -r["mae"])[:2],
        per_source=source_rows(metrics, data.get("sources") and [d["name"] for d in data["sources"]] or [],
                               data_summary.get("splits_by_source")),
    )
    return ModelCard(content)


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_metrics(run_dir: Path) -> dict[str, float]:
    """test_* and eval_* metrics a run wrote (train.py's names first, the Trainer's save_metrics names second)."""
    metrics: dict[str, float] = {}
    for names in (("eval_metrics.json", "eval_results.json"), ("test_metrics.json", "test_results.json")):
        found = next((Path(run_dir) / n for n in names if (Path(run_dir) / n).exists()), None)
        if found:
            metrics.update(load_json(found))
    return metrics


def model_card_for_run(run_dir: Path, hub_model_id: str | None = None) -> ModelCard:
    """The model card of a run folder, rebuilt from its config.json and the metrics/summary JSON beside it."""
    from types import SimpleNamespace

    from age_model.modeling import AgeSettings

    settings = AgeSettings.from_config(SimpleNamespace(agecheck=read_config(run_dir).get("agecheck")))
    return render_model_card(Path(run_dir), run_metrics(run_dir), settings, load_json(Path(run_dir) / "data_summary.json"), hub_model_id)


# ---------------------------------------------------------------- feedback card


def counts(value: Any) -> list[tuple[str, int]]:
    """A {name: count} mapping as rows, largest first; anything else (missing, a bare number) as none."""
    if not isinstance(value, Mapping):
        return []
    return sorted(((str(k), int(v or 0)) for k, v in value.items()), key=lambda kv: (-kv[1], kv[0]))


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def render_feedback_card(stats: dict) -> DatasetCard:
    """The feedback dataset's card from the store's stats; every key may be missing (the card says 'not recorded')."""
    stats = dict(stats or {})
    num_samples, num_votes = number(stats.get("num_samples")), number(stats.get("num_votes"))
    agreement = mapping(stats.get("agreement"))
    per_annotator = {str(name): number(mapping(a).get("mean_abs_diff")) for name, a in mapping(agreement.get("per_annotator")).items()}
    configs = stats.get("configs") if isinstance(stats.get("configs"), list) else []
    extra_meta = {k: stats[k] for k in ("configs", "dataset_info") if stats.get(k)}
    card_data = DatasetCardData(
        pretty_name="agecheck feedback: age labels from annotators",
        **license_fields(stats.get("license")),
        task_categories=["image-classification"],
        tags=["age-estimation", "faces", "human-feedback", "agecheck"],
        size_categories=[size_category(int(num_samples))] if num_samples is not None else None,
        **extra_meta,
    )
    include_images = stats.get("include_dataset_images")
    content = render_template(
        "feedback_card.md.j2",
        card_data=card_data.to_yaml(), num_samples=num_samples, num_votes=num_votes,
        num_rows=number(stats.get("num_rows")),
        votes_per_sample=num_votes / num_samples if num_samples and num_votes is not None else None,
        annotators=counts(stats.get("annotators")), consent=counts(stats.get("consent")),
        sources=counts(stats.get("sources")), statuses=counts(stats.get("statuses")),
        mean_abs_diff=number(agreement.get("mean_abs_diff")), within_5=number(agreement.get("within_5")),
        pairs=number(agreement.get("pairs")), multi=number(agreement.get("samples_with_multiple_annotators")),
        per_annotator=per_annotator, config_names=[mapping(c).get("config_name") for c in configs],
        include_dataset_images=include_images if isinstance(include_images, bool) else None,
        license=stats.get("license") or "not recorded",
        # issue 12: Krippendorff's alpha (overall, per source), pseudonymous names, the export's content hash
        alpha=number(agreement.get("alpha")),
        by_source={str(k): mapping(v) for k, v in mapping(stats.get("agreement_by_source")).items()},
        pseudonymous=bool(stats.get("pseudonymous")), fingerprint=stats.get("fingerprint"),
    )
    return DatasetCard(content)


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m age_model.cards", description="Render agecheck's cards from their data.")
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset-card", help="dataset card of a training source, computed from its label file")
    dataset.add_argument("name", choices=sorted(KNOWN_DATASETS))
    dataset.add_argument("--labels", type=Path, help="label CSV (default: the shared copy, e.g. ../shared/data/utkface/labels.csv)")
    dataset.add_argument("--out", type=Path, help="write here instead of printing (e.g. data_cards/utkface.md)")
    args = parser.parse_args(argv)

    labels = args.labels or SHARED_DIR / KNOWN_DATASETS[args.name].labels
    if not labels.exists():
        print(f"Label file not found: {labels}. Pass --labels PATH.", file=sys.stderr)
        return 1
    text = str(render_dataset_card(args.name, labels))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
