"""Export the feedback store as a Hugging Face dataset folder, and push it to the Hub.

Layout of ``OUT`` (``datasets.load_dataset(OUT)`` reads it; so does the Hub viewer)::

    OUT/README.md                            dataset card, numbers computed from the store
    OUT/data/train-00000-of-00001.parquet    one row per labelled sample: config ``default``, split ``train``
    OUT/votes/votes-00000-of-00001.parquet   every vote behind those samples: config ``votes``
        load_dataset(OUT, "votes"), or load_dataset("parquet", data_files=f"{OUT}/votes/*.parquet")

The card declares two ``configs``: ``default`` (the labelled samples, ``data/train-*``) and
``votes`` (every annotator's votes, ``votes/*``), so ``load_dataset(REPO, "votes")`` works on the Hub.
The file names stay fixed so that a scheduled push replaces the files on the Hub (it never deletes
any). Locally, ``datasets`` 5.2 caches a folder with YAML configs by its *name* and config list, not
its content: after a re-export into a folder of the same name, read it with
``load_dataset("parquet", data_files=...)`` (as ``merge.load_feedback`` and ``train.py --feedback``
do) or ``download_mode="force_redownload"``; the Annotate page exports into a new folder each time.
The card ends with a hash of the exported files.
Annotator names are pseudonyms (``annotator-1``, ... in the order of their first vote, ``public-1``,
... for the public page's pseudonymous reporters) unless ``real_names=True`` (``--real-names``), so a
public push never names the team. The card carries the annotation guidelines and the agreement
(mean difference, share within 5 years, Krippendorff's alpha), overall and per source.

What is exported, and why:
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

import hashlib
import logging
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets

from age_model.cards import render_feedback_card
from age_model.hub import push_feedback

from .aggregate import active_votes, agreement, krippendorff_alpha
from .records import UPLOAD_SOURCES, Status, is_public_submitter
from .store import FeedbackStore

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "agecheck-consent-terms"
DATA_FILE = "data/train-00000-of-00001.parquet"
VOTES_FILE = "votes/votes-00000-of-00001.parquet"
FEATURES = datasets.Features({
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
})
VOTE_FEATURES = datasets.Features({
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
})


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds."""

    path: Path
    num_rows: int
    stats: dict[str, Any]


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
        rows.append({
            "image": image, "id": sample.sample_id, "age": lab.age, "age_std": lab.age_std,
            "num_votes": lab.num_votes, "status": str(lab.status), "source": sample.source,
            "previous_label": lab.reference_label, "model_age": lab.model_age, "model_version": lab.model_version,
            "consent": lab.consent if is_upload(sample.source) else None, "original_name": sample.original_name,
        })
    return rows


def feedback_dataset(store: FeedbackStore, *, include_dataset_images: bool = False) -> datasets.Dataset:
    """The export's main table as an in-memory ``datasets.Dataset`` (``image`` is an Image feature)."""
    return _table(feedback_records(store, include_dataset_images=include_dataset_images), FEATURES)


def _table(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """Rows as a Dataset with fixed features; an empty list gives an empty table, not an error."""
    return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)


def _vote_rows(store: FeedbackStore, sample_ids: set[str]) -> list[dict[str, Any]]:
    rows = []
    for sample_id, votes in sorted(store.votes_by_sample(sorted(sample_ids)).items()):
        for v in votes:
            rows.append({
                "vote_id": v.id, "sample_id": v.sample_id, "kind": v.kind, "age": v.age, "annotator": v.annotator,
                "created_at": v.created_at.isoformat(), "source": v.source, "previous_label": v.previous_label,
                "model_age": v.model_age, "model_version": v.model_version, "consent": v.consent, "retracts": v.retracts,
            })
    return sorted(rows, key=lambda r: r["vote_id"])


def agreement_with_alpha(votes_by_sample: dict[str, list[Any]]) -> dict[str, Any]:
    """``aggregate.agreement`` plus Krippendorff's alpha (interval) over the same samples."""
    return {**agreement(votes_by_sample), "alpha": krippendorff_alpha(votes_by_sample)}


CONFIGS = [
    {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}], "default": True},
    {"config_name": "votes", "data_files": [{"split": "train", "path": VOTES_FILE}]},
]


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


def _rename(stats: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
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
            source: agreement_with_alpha({s.sample_id: votes.get(s.sample_id, []) for s in labelled if s.source == source})
            for source in sorted({s.source for s in labelled})
        },
        "rules": asdict(store.rules),
        "license": license,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def export_feedback(
    store: FeedbackStore | str, out: str | Path, *, include_dataset_images: bool = False,
    license: str = DEFAULT_LICENSE, overwrite: bool = False, real_names: bool = False,
) -> ExportResult:
    """Write the export folder atomically (built beside ``out``, renamed into place at the end).
    Annotators appear under pseudonyms unless ``real_names``."""
    own = isinstance(store, str)
    store_ = FeedbackStore(store) if isinstance(store, str) else store
    out = Path(out)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            (tmp / "data").mkdir(parents=True)
            (tmp / "votes").mkdir()
            table = feedback_dataset(store_, include_dataset_images=include_dataset_images)
            table.to_parquet(str(tmp / DATA_FILE))
            votes = _vote_rows(store_, set(table["id"]))
            names = {} if real_names else pseudonyms(store_)
            for vote in votes:
                vote["annotator"] = names.get(vote["annotator"], vote["annotator"])
            _table(votes, VOTE_FEATURES).to_parquet(str(tmp / VOTES_FILE))
            stats = feedback_stats(store_, license=license)
            digest = hashlib.sha256()
            for name in (DATA_FILE, VOTES_FILE):
                digest.update((tmp / name).read_bytes())
            stats.update(num_rows=len(table), include_dataset_images=include_dataset_images, configs=CONFIGS,
                         pseudonymous=not real_names, fingerprint=digest.hexdigest()[:16])
            render_feedback_card(_rename(stats, names) if names else stats).save(str(tmp / "README.md"))
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if own:
            store_.close()
    logger.info("exported %d rows to %s", len(table), out)
    return ExportResult(path=out, num_rows=len(table), stats=stats)


def push_export(
    folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None, api: Any = None,
) -> str:
    """Upload an export folder to a Hub dataset repo (private by default: face photos) through
    ``age_model.hub.push_feedback``: token lookup, staging without local-only files, one clear error."""
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / DATA_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a feedback export (README.md and {DATA_FILE} expected)")
    return push_feedback(folder, repo_id, private=private, token=token, api=api)
