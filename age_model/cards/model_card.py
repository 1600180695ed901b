"""The model card of a trained run: its metrics into `model-index`, the framing, the head, the training
procedure, the data's terms, intended use and limits. ``model_card_for_run`` rebuilds it from a run folder."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from age_model.ages import AGE_BANDS, band_label
from age_model.cards.render import display_path, known_dataset, license_fields, mapping, render_template, slug
from age_model.cards.stats import split_name
from age_model.repo_ids import is_repo_id

if TYPE_CHECKING:
    from age_model.modeling import AgeSettings


def split_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """`test_mae` -> `mae` for one prefix; non-numeric and non-finite entries (empty bands are NaN) are dropped."""
    return {
        key[len(prefix) :]: float(value)
        for key, value in metrics.items()
        if key.startswith(prefix)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def band_rows(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """MAE per age band, in band order, for the bands the metrics hold."""
    return [
        {"label": band_label(name), "mae": metrics[f"mae_{name}"]}
        for name, _, _ in AGE_BANDS
        if f"mae_{name}" in metrics
    ]


HEADLINE_METRICS = (("mae", "MAE (years)"), ("rmse", "RMSE (years)"), ("cs5", "CS@5 (share within 5 years)"))
TABLE_ONLY_METRICS = (("mae_without_flip_tta", "MAE without flip TTA (years)"),)


def metric_rows(test: Mapping[str, float], validation: Mapping[str, float]) -> list[dict[str, Any]]:
    """The headline metrics side by side for the card's table (None where a split lacks one)."""
    return [
        {"name": name, "pct": key == "cs5", "test": test.get(key), "validation": validation.get(key)}
        for key, name in HEADLINE_METRICS + TABLE_ONLY_METRICS
        if key in test or key in validation
    ]


def model_index(
    test: Mapping[str, float], validation: Mapping[str, float], dataset_type: str, dataset_name: str
) -> list[EvalResult]:
    """MAE, RMSE and CS@5 as `model-index` results (the Trainer's own card drops MAE)."""
    results = []
    for split, values in (("test", test), ("validation", validation)):
        for metric, metric_name in HEADLINE_METRICS:
            if metric in values:
                results.append(
                    EvalResult(
                        task_type="image-classification",
                        task_name="Age estimation (regression, years)",
                        dataset_type=dataset_type,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=metric,
                        metric_name=metric_name,
                        metric_value=values[metric],
                    )
                )
    return results


HYPERPARAMETER_LABELS = (
    ("learning_rate", "peak learning rate"),
    ("lr_scheduler_type", "schedule"),
    ("warmup_steps", "warm-up (steps, or share)"),
    ("optimizer", "optimizer"),
    ("weight_decay", "weight decay"),
    ("batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation"),
    ("processes", "processes (one per GPU)"),
    ("total_batch_size", "total batch size"),
    ("epochs", "epochs asked"),
    ("max_steps", "max steps"),
    ("steps_trained", "steps trained"),
    ("epochs_trained", "epochs trained"),
    ("precision", "precision"),
    ("seed", "seed"),
    ("balance", "sampling balance"),
    ("max_train_samples", "training images cap"),
    ("max_eval_samples", "validation/test images cap"),
)
MODEL_HYPERPARAMETERS = (
    ("loss", "loss (regression head)"),
    ("label_sigma", "label sigma (bins head)"),
    ("freeze_backbone_epochs", "head-only epochs first"),
    ("augment", "augmentation"),
)


def hyperparameter_rows(hyperparameters: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) for the card's training table, in a fixed order; options the run did not record are left out."""
    model = mapping(hyperparameters.get("model"))
    rows = [
        (label, hyperparameters[key]) for key, label in HYPERPARAMETER_LABELS if hyperparameters.get(key) is not None
    ]
    if hyperparameters.get("max_steps", -1) in (-1, 0):
        rows = [row for row in rows if row[0] != "max steps"]
    head_only = {"loss": "regression", "label_sigma": "bins"}  # options that only one head reads
    return rows + [
        (label, model[key])
        for key, label in MODEL_HYPERPARAMETERS
        if model.get(key) is not None and head_only.get(key, model.get("head")) == model.get("head")
    ]


def smoke_facts(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """What made a run a smoke run, for the warning at the top of its card."""
    return {
        "steps": hyperparameters.get("steps_trained"),
        "epochs": hyperparameters.get("epochs_trained"),
        "train_images": hyperparameters.get("train_images"),
        "max_train_samples": hyperparameters.get("max_train_samples"),
        "max_eval_samples": hyperparameters.get("max_eval_samples"),
    }


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
    return {
        "base": display_path(base) if base else "",
        "hub_base": base if is_repo_id(base) and not from_scratch else None,
        "from_scratch": bool(from_scratch),
    }


def dataset_facts(data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """Name, Hub id (if any), licence and terms of the training data (each source's when there are several)."""
    sources = [str(s) for s in data_summary.get("sources") or []]
    if len(sources) > 1:
        return _several_sources_facts(data_summary, sources)
    name = str(data_summary.get("name") or "unknown")
    known = known_dataset(name)
    hub_id = data_summary.get("hub_id") or (
        data_summary.get("source") if is_repo_id(data_summary.get("source")) else None
    )
    license_text = data_summary.get("license")
    return {
        "name": name,
        "known": known,
        "hub_id": hub_id,
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
        "name": "+".join(sources),
        "known": None,
        "hub_id": None,
        "pretty_name": " + ".join(pretty),
        "source": display_path(str(data_summary.get("source") or "")),
        "license": terms,
        "license_fields": {
            "license": "other",
            "license_name": slug("-".join(k.license_name if k else n for n, k in zip(sources, knowns))),
        },
        "sources": [{"name": n, "pretty_name": p, "known": k} for n, p, k in zip(sources, pretty, knowns)],
    }


def source_rows(
    metrics: Mapping[str, float], sources: Sequence[str], split_sources: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
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
                row[f"{split}_{key}"] = metrics.get(
                    f"{split}_{source}_{key}", metrics.get(f"{split}_{key}") if only else None
                )
        rows.append(row)
    return rows


def render_model_card(
    run_dir: Path,
    metrics: dict[str, float],
    settings: AgeSettings,
    data_summary: dict,
    hub_model_id: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
) -> ModelCard:
    """The model card of a trained run: metrics into `model-index`, framing, head, training procedure, intended use
    and limits. ``hyperparameters`` is what train.py writes to training_options.json (a smoke run is labelled)."""
    data_summary = data_summary or {}
    hyperparameters = dict(hyperparameters or {})
    smoke = bool(hyperparameters.get("smoke_run"))
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
        tags=[
            "age-estimation",
            "regression",
            "faces",
            "agecheck",
            f"head-{settings.head}",
            *(["smoke-run"] if smoke else []),
        ],
        metrics=["mae"],
        eval_results=model_index(test, validation, data["hub_id"] or data["name"], data["pretty_name"]) or None,
        **data["license_fields"],
    )
    bands = band_rows(test)
    config = read_config(run_dir)
    content = render_template(
        "model_card.md.j2",
        card_data=card_data.to_yaml(),
        model_name=model_name,
        hub_model_id=hub_model_id,
        settings=settings,
        architecture=(config.get("architectures") or ["unknown"])[0],
        model_type=config.get("model_type", "unknown"),
        base=base,
        data=data,
        summary=data_summary,
        splits={split_name(k): v for k, v in (data_summary.get("splits") or {}).items()},
        age_stats={split_name(k): v for k, v in (data_summary.get("age_stats") or {}).items()},
        age_bands=data_summary.get("age_bands") or {},
        feedback=data_summary.get("feedback"),
        test=test,
        validation=validation,
        metric_rows=metric_rows(test, validation),
        bands=bands,
        worst=sorted(bands, key=lambda r: -r["mae"])[:2],
        hyperparameters=hyperparameter_rows(hyperparameters),
        smoke=smoke_facts(hyperparameters) if smoke else None,
        per_source=source_rows(
            metrics,
            data.get("sources") and [d["name"] for d in data["sources"]] or [],
            data_summary.get("splits_by_source"),
        ),
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
    return render_model_card(
        Path(run_dir),
        run_metrics(run_dir),
        settings,
        load_json(Path(run_dir) / "data_summary.json"),
        hub_model_id,
        hyperparameters=load_json(Path(run_dir) / "training_options.json"),
    )
