"""Fold settled feedback into a training DatasetDict before retraining.

- Corrections override the original ``age`` in the train and validation splits, matched on ``id``
  (the sha256 of the image file bytes that the data loader and the store both use). Test-split
  corrections are withheld unless ``include_test=True``: an annotator who saw the model's estimate
  before correcting it would otherwise move the reported test figures towards the model.
- Consented uploads join the ``train`` split as new rows (their image bytes come from the store
  or the export), unless a split already holds the same image.
- Only ``settled`` labels are used; pending / needs-another-look ones are counted and skipped.

The summary dict is what the model card prints: ``corrected`` (rows whose label was replaced by
the feedback label), ``changed`` (of those, rows whose age actually moved), ``corrected_by_split``,
``withheld_test`` (test-split corrections left out), ``added``,
``skipped_unsettled``, ``unmatched`` (settled corrections of samples not in this data set) and
``already_present`` (uploads whose image the data set already has).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from .export import feedback_dataset
from .records import UPLOAD_SOURCES, Status
from .store import FeedbackStore

REQUIRED = ("id", "age", "status", "source", "image")


def load_feedback(feedback: str | os.PathLike[str] | datasets.Dataset) -> datasets.Dataset:
    """The feedback table from a store URL, an export folder, or an already loaded Dataset."""
    if isinstance(feedback, datasets.Dataset):
        table = feedback
    elif isinstance(feedback, str) and "://" in feedback:
        with FeedbackStore(
            feedback, startup_check=False, create=False
        ) as store:  # a mistyped URL must fail, not make an empty store
            table = feedback_dataset(store)
    else:
        path = Path(feedback)
        if not path.is_dir():
            raise FileNotFoundError(
                f"feedback export folder not found: {path} (give a folder written by "
                "`python -m age_model.feedback export` or a store URL such as sqlite:///feedback_data/feedback.db)"
            )
        # the parquet files themselves: a re-export into the same folder must never load cached rows
        table = datasets.load_dataset("parquet", data_files=str(path / "data" / "train-*.parquet"), split="train")
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise ValueError(f"not a feedback table: columns {missing} missing")
    return table.cast_column("image", datasets.Image(decode=False))


def _new_rows(uploads: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """Uploads shaped like the train split: known columns filled, the others left empty."""
    fill = {
        "image": lambda r: r["image"],
        "age": lambda r: r["age"],
        "id": lambda r: r["id"],
        "source": lambda r: r["source"],
        "file": lambda r: r.get("original_name") or (r["image"] or {}).get("path"),
    }
    columns = {name: [fill[name](r) if name in fill else None for r in uploads] for name in features}
    return datasets.Dataset.from_dict(columns, features=features)


def apply_feedback(
    dataset: datasets.DatasetDict, feedback: str | os.PathLike[str] | datasets.Dataset, include_test: bool = False
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """Return the data set with settled feedback applied, and a summary of what changed."""
    table = load_feedback(feedback)
    rows = table.to_list()
    settled = [r for r in rows if r["status"] == str(Status.SETTLED) and r["age"] is not None]
    corrections = {r["id"]: float(r["age"]) for r in settled}
    summary: dict[str, Any] = {
        "corrected": 0,
        "changed": 0,
        "corrected_by_split": {},
        "withheld_test": 0,
        "added": 0,
        "skipped_unsettled": len(rows) - len(settled),
        "unmatched": 0,
        "already_present": 0,
    }
    seen: set[str] = set()
    out: dict[str, datasets.Dataset] = {}
    for name, split in dataset.items():
        if "id" not in split.column_names or "age" not in split.column_names:
            raise ValueError(f"split {name!r} needs 'id' (sha256 of the image bytes) and 'age' columns")
        ids = list(split["id"])
        seen.update(ids)
        hits = [i for i, sid in enumerate(ids) if sid in corrections]
        if name == "test" and not include_test:
            summary["withheld_test"] += len(hits)
            out[name] = split
            continue
        summary["corrected_by_split"][name] = len(hits)
        age_feature = split.features["age"]
        if not (isinstance(age_feature, datasets.Value) and age_feature.dtype.startswith("float")):
            split = split.cast_column("age", datasets.Value("float64"))
        if hits:
            old = list(split["age"])
            summary["corrected"] += len(hits)
            summary["changed"] += sum(abs(old[i] - corrections[ids[i]]) > 1e-6 for i in hits)

            def relabel(batch_ids: list[str], ages: list[float]) -> dict[str, list[float]]:
                return {"age": [corrections.get(sid, age) for sid, age in zip(batch_ids, ages)]}

            split = split.map(relabel, batched=True, input_columns=["id", "age"], desc=f"feedback labels for {name}")
        out[name] = split
    matched = {sid for sid in corrections if sid in seen}
    uploads = [r for r in settled if r["source"] in UPLOAD_SOURCES and r.get("consent") is True and r["image"]]
    summary["already_present"] = sum(r["id"] in seen for r in uploads)
    summary["unmatched"] = sum(1 for r in settled if r["source"] not in UPLOAD_SOURCES and r["id"] not in matched)
    fresh = [r for r in uploads if r["id"] not in seen]
    if fresh:
        if "train" not in out:
            raise ValueError("the data set has no 'train' split to add the feedback uploads to")
        train = out["train"]
        out["train"] = datasets.concatenate_datasets([train, _new_rows(fresh, train.features)])
        summary["added"] = len(fresh)
    return datasets.DatasetDict(out), summary
