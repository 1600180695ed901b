"""The feedback store as data: one row per labelled sample (``feedback_dataset``), every vote behind
them, pseudonyms for the annotators, and the figures a card reports (``feedback_stats``).

Publishing those rows (the export folder with its card, the push to the Hub) is ``age_model.publish``:
the store knows nothing of cards or the Hub. What is exported, and why:
- Stakeholder uploads (source ``upload``/``webcam``) only with consent: the image bytes as stored
  (metadata already stripped by the app), ``consent=True``.
- Samples of third-party data sets (UTKFace, APPA-REAL, ...) as *corrections only*: ``id`` (the
  sha256 the data loader also computes) and the aggregated age, ``image`` empty. Their licences
  (UTKFace: non-commercial research only) do not allow us to re-publish the photos; whoever
  retrains has the original data set and joins on ``id``. ``include_dataset_images=True``
  (``--include-dataset-images``) adds the stored bytes for private mirrors.
- Every status is exported (the ``status`` column says which labels are settled); samples whose
  votes were all retracted are not. Free-text notes are never exported (they may name people).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import datasets

from .aggregate import active_votes, agreement, krippendorff_alpha
from .records import UPLOAD_SOURCES, Status, is_public_submitter
from .store import FeedbackStore

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "agecheck-consent-terms"
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "id": datasets.Value("string"),
        "age": datasets.Value("float64"),
        "age_std": datasets.Value("float64"),
        "num_votes": datasets.Value("int32"),
        "status": datasets.Value("string"),
        "source": datasets.Value("string"),
        "previous_label": datasets.Value("float64"),
        "model_age": datasets.Value("float64"),
        "model_version": datasets.Value("string"),
        "consent": datasets.Value("bool"),
        "original_name": datasets.Value("string"),
    }
)
VOTE_FEATURES = datasets.Features(
    {
        "vote_id": datasets.Value("int64"),
        "sample_id": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "age": datasets.Value("float64"),
        "annotator": datasets.Value("string"),
        "created_at": datasets.Value("string"),
        "source": datasets.Value("string"),
        "previous_label": datasets.Value("float64"),
        "model_age": datasets.Value("float64"),
        "model_version": datasets.Value("string"),
        "consent": datasets.Value("bool"),
        "retracts": datasets.Value("int64"),
    }
)


def is_upload(source: str) -> bool:
    return source in UPLOAD_SOURCES


def feedback_records(store: FeedbackStore, *, include_dataset_images: bool = False) -> list[dict[str, Any]]:
    """One exportable row per labelled sample, following the rules in the module docstring."""
    labels = store.labels()
    rows = []
    for sample in store.samples():
        lab = labels[sample.sample_id]
        if lab.status == Status.UNREVIEWED or (is_upload(sample.source) and lab.consent is not True):
            continue
        image = None
        if sample.image_path is not None and (is_upload(sample.source) or include_dataset_images):
            image = {"bytes": sample.image_path.read_bytes(), "path": sample.image_path.name}
        rows.append(
            {
                "image": image,
                "id": sample.sample_id,
                "age": lab.age,
                "age_std": lab.age_std,
                "num_votes": lab.num_votes,
                "status": str(lab.status),
                "source": sample.source,
                "previous_label": lab.reference_label,
                "model_age": lab.model_age,
                "model_version": lab.model_version,
                "consent": lab.consent if is_upload(sample.source) else None,
                "original_name": sample.original_name,
            }
        )
    return rows


def feedback_dataset(store: FeedbackStore, *, include_dataset_images: bool = False) -> datasets.Dataset:
    """The export's main table as an in-memory ``datasets.Dataset`` (``image`` is an Image feature)."""
    return rows_to_table(feedback_records(store, include_dataset_images=include_dataset_images), FEATURES)


def rows_to_table(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """Rows as a Dataset with fixed features; an empty list gives an empty table, not an error."""
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def vote_rows(store: FeedbackStore, sample_ids: set[str]) -> list[dict[str, Any]]:
    rows = []
    for sample_id, votes in sorted(store.votes_by_sample(sorted(sample_ids)).items()):
        for v in votes:
            rows.append(
                {
                    "vote_id": v.id,
                    "sample_id": v.sample_id,
                    "kind": v.kind,
                    "age": v.age,
                    "annotator": v.annotator,
                    "created_at": v.created_at.isoformat(),
                    "source": v.source,
                    "previous_label": v.previous_label,
                    "model_age": v.model_age,
                    "model_version": v.model_version,
                    "consent": v.consent,
                    "retracts": v.retracts,
                }
            )
    return sorted(rows, key=lambda r: r["vote_id"])


def agreement_with_alpha(votes_by_sample: dict[str, list[Any]]) -> dict[str, Any]:
    """``aggregate.agreement`` plus Krippendorff's alpha (interval) over the same samples."""
    return {**agreement(votes_by_sample), "alpha": krippendorff_alpha(votes_by_sample)}


def pseudonyms(store: FeedbackStore) -> dict[str, str]:
    """Annotator name -> ``annotator-N`` (``public-N`` for the public page), numbered by first vote:
    votes are append-only, so a name keeps its pseudonym in every later export."""
    names: dict[str, str] = {}
    counters = {"annotator": 0, "public": 0}
    for vote in store.votes():
        if vote.annotator not in names:
            kind = "public" if is_public_submitter(vote.annotator) else "annotator"
            counters[kind] += 1
            names[vote.annotator] = f"{kind}-{counters[kind]}"
    return names


def rename_annotators(stats: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The card's stats with annotator names replaced."""
    out = dict(stats)
    out["annotators"] = {names.get(k, k): v for k, v in stats["annotators"].items()}
    agreement_ = dict(stats["agreement"])
    agreement_["per_annotator"] = {names.get(k, k): v for k, v in agreement_["per_annotator"].items()}
    out["agreement"] = agreement_
    return out


def feedback_stats(store: FeedbackStore, *, license: str = DEFAULT_LICENSE) -> dict[str, Any]:
    """Counts, annotators, agreement and consent of a store: what the dataset card and Stats tab show.

    Keys follow ``age_model.cards.render_feedback_card``: ``num_samples`` (samples with at least
    one active vote), ``num_votes`` (active votes), ``num_rows`` (rows an export would hold),
    ``annotators`` / ``sources`` / ``statuses`` / ``consent`` ({name: count}), ``agreement``
    (see ``aggregate.agreement``), ``license``; plus raw counts and the label rules.
    """
    samples = store.samples()
    votes = store.votes_by_sample()
    labels = store.labels()
    labelled = [s for s in samples if labels[s.sample_id].status != Status.UNREVIEWED]
    live = [v for s in labelled for v in active_votes(votes.get(s.sample_id, []))]
    uploads = [s for s in samples if is_upload(s.source)]
    consent_names = {True: "given", False: "refused", None: "not asked"}
    exportable = sum(1 for s in labelled if not is_upload(s.source) or labels[s.sample_id].consent is True)
    all_rows = [v for rows in votes.values() for v in rows]
    return {
        "num_samples": len(labelled),
        "num_votes": len(live),
        "num_rows": exportable,
        "num_known_samples": len(samples),
        "num_vote_records": len(all_rows),
        "num_retractions": sum(v.kind == "retract" for v in all_rows),
        "annotators": dict(sorted(Counter(v.annotator for v in live).items())),
        "sources": dict(sorted(Counter(s.source for s in labelled).items())),
        "statuses": dict(sorted(Counter(str(labels[s.sample_id].status) for s in labelled).items())),
        "consent": dict(Counter(consent_names[labels[s.sample_id].consent] for s in uploads)),
        "agreement": agreement_with_alpha({s.sample_id: votes.get(s.sample_id, []) for s in labelled}),
        "agreement_by_source": {
            source: agreement_with_alpha(
                {s.sample_id: votes.get(s.sample_id, []) for s in labelled if s.source == source}
            )
            for source in sorted({s.source for s in labelled})
        },
        "rules": asdict(store.rules),
        "license": license,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
