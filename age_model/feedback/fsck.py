"""Consistency check of a store: database rows against the images folder.

What can go wrong and what is done about it:
- an image file no row references (a writer died between the file rename and the commit, or a
  transaction rolled back): *orphan*; ``clean=True`` deletes it once older than ``grace``
  seconds, so a writer that is about to commit is never robbed of its file;
- a leftover ``.tmp/*.part`` file (a writer died while writing): deleted the same way;
- a row whose file is gone or whose bytes no longer hash to the id (``verify=True``): reported,
  never touched: that needs a human (restore from backup);
- a vote row of impossible shape (a retraction of a missing vote, of another annotator's vote,
  across samples): reported. The schema's constraints make these impossible unless the
  database was edited by hand.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from . import schema
from .db import run_tx
from .images import SAMPLE_ID

if TYPE_CHECKING:
    from .store import FeedbackStore


@dataclass
class FsckReport:
    """Findings of one check; ``ok`` is True when there is nothing to report."""

    samples: int = 0
    votes: int = 0
    files: int = 0
    orphan_files: list[Path] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    corrupt_images: list[str] = field(default_factory=list)
    bad_votes: list[int] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.orphan_files or self.temp_files or self.missing_images or self.corrupt_images or self.bad_votes
        )

    def summary(self) -> str:
        parts = [f"{self.samples} samples, {self.votes} vote rows, {self.files} image files"]
        for name in ("orphan_files", "temp_files", "missing_images", "corrupt_images", "bad_votes", "removed"):
            if getattr(self, name):
                parts.append(f"{len(getattr(self, name))} {name.replace('_', ' ')}")
        return "; ".join(parts) + ("; OK" if self.ok else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "samples": self.samples,
            "votes": self.votes,
            "files": self.files,
            **{
                k: [str(x) for x in getattr(self, k)]
                for k in ("orphan_files", "temp_files", "missing_images", "corrupt_images", "bad_votes", "removed")
            },
        }


def _bad_votes(conn: Connection, known: set[str]) -> tuple[int, list[int]]:
    """How many votes there are, and the ids of those that point nowhere or retract wrongly (one read)."""
    v = schema.votes
    rows = {
        r.id: r for r in conn.execute(select(v.c.id, v.c.kind, v.c.sample_id, v.c.annotator, v.c.retracts, v.c.age))
    }
    bad = []
    for r in rows.values():
        target = rows.get(r.retracts) if r.retracts is not None else None
        if r.sample_id not in known or (r.kind == "vote" and r.age is None):
            bad.append(r.id)
        elif r.kind == "retract" and (
            target is None
            or target.kind != "vote"
            or target.annotator != r.annotator
            or target.sample_id != r.sample_id
        ):
            bad.append(r.id)
    return len(rows), sorted(bad)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsck(store: FeedbackStore, *, clean: bool = False, verify: bool = False, grace: float = 600.0) -> FsckReport:
    """Compare rows and files; with ``clean`` delete orphans and temp files older than ``grace`` s."""
    report = FsckReport()

    def read(conn: Connection) -> tuple[dict[str, str | None], int, list[int]]:
        paths = {
            r.sample_id: r.image_path
            for r in conn.execute(select(schema.samples.c.sample_id, schema.samples.c.image_path))
        }
        return (paths, *_bad_votes(conn, set(paths)))

    # Files are listed *before* the rows are read: a file published after the listing cannot be
    # taken for an orphan, and one listed before its row commits is protected by the grace period.
    files = list(store.images.files())
    temps = store.images.temp_files()
    paths, report.votes, report.bad_votes = run_tx(store.engine, read, read_only=True)
    report.samples, report.files = len(paths), len(files)
    referenced = {p for p in paths.values() if p}
    report.orphan_files = [path for rel, path in files if rel not in referenced]
    report.temp_files = temps
    on_disk = {rel for rel, _ in files}
    for sample_id, rel in sorted(paths.items()):
        if not rel:
            continue
        path = store.images.resolve(rel)
        if rel not in on_disk and not path.is_file():
            report.missing_images.append(sample_id)
        elif verify and (not SAMPLE_ID.fullmatch(sample_id) or _sha256_file(path) != sample_id):
            report.corrupt_images.append(sample_id)
    if clean:
        cutoff = time.time() - grace
        for path in report.orphan_files + report.temp_files:
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    report.removed.append(path)
            except FileNotFoundError:
                pass
        if report.removed:
            removed = set(report.removed)
            report.orphan_files = [p for p in report.orphan_files if p not in removed]
            report.temp_files = [p for p in report.temp_files if p not in removed]
    return report
