"""Publish the feedback dataset: write the export folder (rows, votes, card) and push it to the Hub.

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

Which rows and images are exported, and why: ``age_model.feedback.export``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from age_model.cards import render_feedback_card
from age_model.feedback.export import (
    DEFAULT_LICENSE,
    VOTE_FEATURES,
    feedback_dataset,
    feedback_stats,
    pseudonyms,
    rename_annotators,
    rows_to_table,
    vote_rows,
)
from age_model.feedback.store import FeedbackStore
from age_model.hub import push_feedback

logger = logging.getLogger(__name__)

DATA_FILE = "data/train-00000-of-00001.parquet"
VOTES_FILE = "votes/votes-00000-of-00001.parquet"

CONFIGS = [
    {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}], "default": True},
    {"config_name": "votes", "data_files": [{"split": "train", "path": VOTES_FILE}]},
]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds."""

    path: Path
    num_rows: int
    stats: dict[str, Any]


def export_feedback(
    store: FeedbackStore | str,
    out: str | Path,
    *,
    include_dataset_images: bool = False,
    license: str = DEFAULT_LICENSE,
    overwrite: bool = False,
    real_names: bool = False,
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
            votes = vote_rows(store_, set(table["id"]))
            names = {} if real_names else pseudonyms(store_)
            for vote in votes:
                vote["annotator"] = names.get(vote["annotator"], vote["annotator"])
            rows_to_table(votes, VOTE_FEATURES).to_parquet(str(tmp / VOTES_FILE))
            stats = feedback_stats(store_, license=license)
            digest = hashlib.sha256()
            for name in (DATA_FILE, VOTES_FILE):
                digest.update((tmp / name).read_bytes())
            stats.update(
                num_rows=len(table),
                include_dataset_images=include_dataset_images,
                configs=CONFIGS,
                pseudonymous=not real_names,
                fingerprint=digest.hexdigest()[:16],
            )
            render_feedback_card(rename_annotators(stats, names) if names else stats).save(str(tmp / "README.md"))
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
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an export folder to a Hub dataset repo (private by default: face photos) through
    ``age_model.hub.push_feedback``: token lookup, staging without local-only files, one clear error."""
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / DATA_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a feedback export (README.md and {DATA_FILE} expected)")
    return push_feedback(folder, repo_id, private=private, token=token, api=api)
