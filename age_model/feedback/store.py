"""The feedback store: samples, append-only votes and review claims behind one URL.

Usage::

    store = FeedbackStore("sqlite:///feedback_data/feedback.db")
    vote = store.add_upload(photo_bytes, 19, "alice", consent=True, model_age=16.5, model_version="v3")
    store.add_vote(vote.sample_id, 20, "bob")        # second opinion
    store.label(vote.sample_id)                       # Label(status=settled, age=19.5, ...)
    store.undo("bob")                                 # appends a retraction of bob's last vote

Crash safety: image bytes are made durable (temp file, fsync, atomic rename) *before* the
transaction that inserts the sample and vote rows, and those rows commit together or not at
all. So a crash can leave an unreferenced image file (found and removed by :meth:`fsck`), never
a row without its file or a half-written vote. Concurrency: every write is one short
transaction (see ``db.py``); nothing is updated in place except filling a sample's missing image
path and the claims table.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, inspect, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

from . import schema
from .aggregate import aggregate
from .db import make_engine, run_tx
from .errors import FeedbackError, InvalidFieldError, NothingToUndoError, StoreConnectionError, UnknownSampleError
from .images import EXTENSIONS, ImageDir, check_image, check_sample_id, read_image_input, sample_id_of, strip_metadata
from .records import Label, LabelRules, Sample, Vote
from .urls import StoreLocation, default_url, parse_store_url
from .validate import check_age, check_annotator, check_consent, check_optional_age, check_text

logger = logging.getLogger(__name__)

CHUNK = 500  # ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits
DEFAULT_CLAIM_TTL = 300.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes (we store UTC), PostgreSQL aware ones: make both aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class FeedbackStore:
    """Samples, votes and claims in one database plus a content-addressed images folder."""

    def __init__(
        self,
        url: str | None = None,
        *,
        images_dir: str | os.PathLike[str] | None = None,
        rules: LabelRules = LabelRules(),
        startup_check: bool = True,
        create: bool = True,
    ) -> None:
        """Open (and with ``create``, initialise) the store; ``create=False`` refuses to make an
        empty store where one was expected (a mistyped path would otherwise export nothing)."""
        self.location: StoreLocation = parse_store_url(url or default_url(), images_dir)
        self.rules = rules
        self.images = ImageDir(self.location.images_dir)
        if not create and self.location.backend == "sqlite" and not Path(self.location.url.database).is_file():
            raise StoreConnectionError(
                f"no feedback store at {self.location.url.database} (from {self.location.display()})"
            )
        self.engine = make_engine(self.location.url)
        try:
            if create:
                self._create_schema()
            elif not inspect(self.engine).has_table("votes"):
                raise StoreConnectionError(f"{self.location.display()} holds no feedback store (no votes table)")
        except DBAPIError as exc:
            self.engine.dispose()
            raise StoreConnectionError(f"cannot open feedback store {self.location.display()}: {exc.orig}") from None
        except BaseException:
            self.engine.dispose()
            raise
        if startup_check:
            from .fsck import fsck

            report = fsck(self)
            if not report.ok:
                logger.warning(
                    "feedback store %s: %s (run `python -m age_model.feedback fsck`)", self, report.summary()
                )

    # -- lifecycle -------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        for attempt in range(3):  # concurrent first opens on PostgreSQL can race on CREATE TABLE
            try:
                schema.metadata.create_all(self.engine)
                break
            except (IntegrityError, ProgrammingError):
                if attempt == 2:
                    raise

        def meta(conn: Connection) -> None:
            row = conn.execute(
                select(schema.store_meta.c.value).where(schema.store_meta.c.key == "schema_version")
            ).first()
            if row is None:
                conn.execute(insert(schema.store_meta).values(key="schema_version", value=schema.SCHEMA_VERSION))
            elif row.value != schema.SCHEMA_VERSION:
                raise StoreConnectionError(f"store schema version {row.value}, this code reads {schema.SCHEMA_VERSION}")

        run_tx(self.engine, meta, retry_integrity=True)

    def close(self) -> None:
        """Release the connection pool (call in each process that is done with the store)."""
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeedbackStore({self.location.display()!r}, images_dir={str(self.images.root)!r})"

    # -- samples -------------------------------------------------------------------------------

    def _prepare_image(self, image: Any, strip: bool) -> tuple[bytes, str, str]:
        if strip:  # strip_metadata decodes (and so checks) the input and writes a JPEG: no second decode
            data = strip_metadata(image)
            return data, sample_id_of(data), EXTENSIONS["JPEG"]
        data = read_image_input(image)
        return data, sample_id_of(data), check_image(data)

    def _ensure_sample(
        self,
        conn: Connection,
        sample_id: str,
        source: str,
        original_name: str | None,
        original_label: float | None,
        image_path: str | None,
    ) -> None:
        """Insert the sample row if new; fill a missing image path once the bytes are stored."""
        row = conn.execute(select(schema.samples.c.image_path).where(schema.samples.c.sample_id == sample_id)).first()
        if row is None:
            conn.execute(
                insert(schema.samples).values(
                    sample_id=sample_id,
                    source=source,
                    original_name=original_name,
                    original_label=original_label,
                    image_path=image_path,
                    first_seen=utcnow(),
                )
            )
        elif image_path and row.image_path is None:
            conn.execute(
                update(schema.samples)
                .where(
                    schema.samples.c.sample_id == sample_id,
                    schema.samples.c.image_path.is_(None),
                )
                .values(image_path=image_path)
            )

    def add_image(
        self,
        image: Any,
        *,
        source: str,
        original_name: str | None = None,
        original_label: float | None = None,
        strip: bool = False,
    ) -> str:
        """Store image bytes once (content addressed) and register the sample; return its id.

        ``strip=True`` re-encodes to a metadata-free JPEG first (use it for photos from the app);
        the id is then the hash of the re-encoded bytes, which are what the export ships.
        """
        source_ = check_text(source, "source", required=True)
        name = check_text(original_name, "original_name", max_len=None)
        label = check_optional_age(original_label, "original_label")
        data, sample_id, ext = self._prepare_image(image, strip)
        rel = self.images.save(data, sample_id, ext)
        run_tx(
            self.engine, lambda c: self._ensure_sample(c, sample_id, source_, name, label, rel), retry_integrity=True
        )  # type: ignore[arg-type]
        return sample_id

    def register_samples(self, rows: Iterable[dict[str, Any]]) -> int:
        """Register data set samples known by id only (no bytes kept); return how many were new.

        Each row: ``sample_id``, ``source``, optional ``original_name``, ``original_label``.
        All rows are checked first, then written in one transaction.
        """
        clean = []
        for row in rows:
            clean.append(
                (
                    check_sample_id(row.get("sample_id")),
                    check_text(row.get("source"), "source", required=True),
                    check_text(row.get("original_name"), "original_name", max_len=None),
                    check_optional_age(row.get("original_label"), "original_label"),
                )
            )

        def tx(conn: Connection) -> int:
            known: set[str] = set()
            ids = [c[0] for c in clean]
            for chunk in _chunks(ids):
                known.update(
                    conn.execute(
                        select(schema.samples.c.sample_id).where(schema.samples.c.sample_id.in_(chunk))
                    ).scalars()
                )
            new = {c[0]: c for c in clean if c[0] not in known}
            if new:
                now = utcnow()
                conn.execute(
                    insert(schema.samples),
                    [
                        dict(
                            sample_id=s,
                            source=src,
                            original_name=n,
                            original_label=lab,
                            image_path=None,
                            first_seen=now,
                        )
                        for s, src, n, lab in new.values()
                    ],
                )
            return len(new)

        return run_tx(self.engine, tx, retry_integrity=True)

    def register_sample(
        self,
        sample_id: str,
        *,
        source: str,
        original_name: str | None = None,
        original_label: float | None = None,
    ) -> str:
        """Register one data set sample by id (see register_samples)."""
        self.register_samples(
            [dict(sample_id=sample_id, source=source, original_name=original_name, original_label=original_label)]
        )
        return sample_id

    def _sample(self, row: Row[Any]) -> Sample:
        return Sample(
            sample_id=row.sample_id,
            source=row.source,
            original_name=row.original_name,
            original_label=row.original_label,
            image_path=self.images.resolve(row.image_path) if row.image_path else None,
            first_seen=as_utc(row.first_seen),
        )

    def samples(self, sample_ids: Sequence[str] | None = None, *, sources: Iterable[str] | None = None) -> list[Sample]:
        """Known samples, optionally only these ids and/or these sources, oldest first."""

        def tx(conn: Connection) -> list[Sample]:
            query = select(schema.samples)
            if sources is not None:
                query = query.where(schema.samples.c.source.in_(list(sources)))
            if sample_ids is None:
                rows = list(conn.execute(query))
            else:
                rows = [
                    r
                    for chunk in _chunks(list(sample_ids))
                    for r in conn.execute(query.where(schema.samples.c.sample_id.in_(chunk)))
                ]
            return sorted((self._sample(r) for r in rows), key=lambda s: (s.first_seen, s.sample_id))

        return run_tx(self.engine, tx, read_only=True)

    def sample(self, sample_id: str) -> Sample:
        found = self.samples([check_sample_id(sample_id)])
        if not found:
            raise UnknownSampleError(f"unknown sample {sample_id}")
        return found[0]

    def image_file(self, sample_id: str) -> Path | None:
        """Where the sample's bytes are stored, or None for a data set sample known by id only."""
        return self.sample(sample_id).image_path

    # -- votes ---------------------------------------------------------------------------------

    @staticmethod
    def _vote(row: Row[Any]) -> Vote:
        return Vote(
            id=row.id,
            sample_id=row.sample_id,
            kind=row.kind,
            age=row.age,
            annotator=row.annotator,
            created_at=as_utc(row.created_at),
            source=row.source,
            previous_label=row.previous_label,
            model_age=row.model_age,
            model_version=row.model_version,
            note=row.note,
            consent=row.consent,
            retracts=row.retracts,
        )

    def _insert_vote(self, conn: Connection, **values: Any) -> Vote:
        """Append one vote row and drop the voter's claim on the sample (the item is done)."""
        values.setdefault("created_at", utcnow())
        values.setdefault("kind", "vote")
        result = conn.execute(insert(schema.votes).values(**values))
        conn.execute(
            delete(schema.claims).where(
                schema.claims.c.sample_id == values["sample_id"],
                schema.claims.c.annotator == values["annotator"],
            )
        )
        fields = {k: values.get(k) for k in Vote.__dataclass_fields__ if k != "id"}
        return Vote(id=result.inserted_primary_key[0], **fields)

    def _sample_votes(self, conn: Connection, sample_ids: Sequence[str]) -> dict[str, list[Vote]]:
        out: dict[str, list[Vote]] = defaultdict(list)
        for chunk in _chunks(list(sample_ids)):
            for row in conn.execute(
                select(schema.votes).where(schema.votes.c.sample_id.in_(chunk)).order_by(schema.votes.c.id)
            ):
                out[row.sample_id].append(self._vote(row))
        return out

    @staticmethod
    def _vote_values(
        sample_id: Any,
        age: Any,
        annotator: Any,
        *,
        source: Any = None,
        previous_label: Any = None,
        model_age: Any = None,
        model_version: Any = None,
        note: Any = None,
        consent: Any = None,
        created_at: Any = None,
    ) -> dict[str, Any]:
        """Checked column values of one vote (raises FeedbackError before anything is written)."""
        values: dict[str, Any] = dict(
            sample_id=check_sample_id(sample_id),
            age=check_age(age),
            annotator=check_annotator(annotator),
            source=check_text(source, "source"),
            previous_label=check_optional_age(previous_label, "previous_label"),
            model_age=check_optional_age(model_age, "model_age"),
            model_version=check_text(model_version, "model_version"),
            note=check_text(note, "note", max_len=5000),
            consent=check_consent(consent),
        )
        if created_at is not None:
            if not isinstance(created_at, datetime):
                raise InvalidFieldError(f"created_at must be a datetime, got {created_at!r}")
            values["created_at"] = as_utc(created_at)
        return values

    def _append_vote(self, conn: Connection, values: dict[str, Any]) -> Vote:
        """Fill defaults from the sample (source, previous label) and append the vote."""
        sample_id = values["sample_id"]
        row = conn.execute(select(schema.samples).where(schema.samples.c.sample_id == sample_id)).first()
        if row is None:
            raise UnknownSampleError(f"unknown sample {sample_id}: add its image or register it first")
        vals = dict(values)  # a retried transaction starts from the caller's values again
        if vals["source"] is None:
            vals["source"] = row.source
        if vals["previous_label"] is None:
            current = aggregate(
                sample_id,
                self._sample_votes(conn, [sample_id])[sample_id],
                original_label=row.original_label,
                rules=self.rules,
            )
            vals["previous_label"] = current.age if current.age is not None else row.original_label
        return self._insert_vote(conn, **vals)

    def add_vote(
        self,
        sample_id: str,
        age: Any,
        annotator: str,
        *,
        source: str | None = None,
        previous_label: float | None = None,
        model_age: float | None = None,
        model_version: str | None = None,
        note: str | None = None,
        consent: bool | None = None,
        created_at: datetime | None = None,
    ) -> Vote:
        """Append a vote on a known sample.

        ``source`` defaults to the sample's source; ``previous_label`` (the label this vote
        replaces) defaults to the sample's current aggregate, else its original label.
        """
        values = self._vote_values(
            sample_id,
            age,
            annotator,
            source=source,
            previous_label=previous_label,
            model_age=model_age,
            model_version=model_version,
            note=note,
            consent=consent,
            created_at=created_at,
        )
        return run_tx(self.engine, lambda conn: self._append_vote(conn, values))

    def add_votes(self, records: Iterable[dict[str, Any]]) -> list[Vote]:
        """Append many votes all-or-nothing (imports): every record is checked first, then one
        transaction writes them in order. Keys are add_vote's parameter names."""
        checked = []
        for n, record in enumerate(records, 1):
            try:
                checked.append(self._vote_values(**record))
            except TypeError as exc:
                raise InvalidFieldError(f"record {n}: {exc}") from None
            except FeedbackError as exc:
                raise type(exc)(f"record {n}: {exc}") from None
        return run_tx(self.engine, lambda conn: [self._append_vote(conn, values) for values in checked])

    def add_upload(
        self,
        image: Any,
        age: Any,
        annotator: str,
        *,
        consent: bool | None,
        source: str = "upload",
        model_age: float | None = None,
        model_version: str | None = None,
        note: str | None = None,
        original_name: str | None = None,
        strip: bool = True,
    ) -> Vote:
        """A stakeholder's photo with its age: image stored once, sample and vote in one commit.

        The photo is re-encoded without metadata unless ``strip=False``. ``consent`` must be
        stated (True/False/None) because only consented uploads are ever exported. The label a
        first vote replaces is the model's estimate the uploader saw (``model_age``), so a
        correction across 18 or 25 waits for a second opinion like any other.
        """
        fields = dict(
            age=check_age(age),
            annotator=check_annotator(annotator),
            source=check_text(source, "source", required=True),
            model_age=check_optional_age(model_age, "model_age"),
            model_version=check_text(model_version, "model_version"),
            note=check_text(note, "note", max_len=5000),
            consent=check_consent(consent),
        )
        name = check_text(original_name, "original_name", max_len=None)
        data, sample_id, ext = self._prepare_image(image, strip)
        rel = self.images.save(data, sample_id, ext)
        return self._commit_upload(sample_id, rel, name, fields)

    def _commit_upload(self, sample_id: str, rel: str, name: str | None, fields: dict[str, Any]) -> Vote:
        """The database half of add_upload, after the image file is durable."""

        def tx(conn: Connection) -> Vote:
            self._ensure_sample(conn, sample_id, fields["source"], name, None, rel)
            first = (
                conn.execute(select(schema.votes.c.id).where(schema.votes.c.sample_id == sample_id).limit(1)).first()
                is None
            )
            previous = fields["model_age"] if first else None  # None: the current aggregate
            return self._append_vote(conn, {"sample_id": sample_id, "previous_label": previous, **fields})

        return run_tx(self.engine, tx, retry_integrity=True)

    def undo(self, annotator: str, sample_id: str | None = None, *, note: str | None = None) -> Vote:
        """Retract the annotator's latest non-retracted vote (on ``sample_id`` if given).

        Appends a ``retract`` row and returns it; the retracted vote stays in the table. Two
        undos racing each other retract two votes (the unique ``retracts`` key makes the loser
        retry on the next one), as two clicks would one after the other.
        """
        name = check_annotator(annotator)
        if sample_id is not None:
            check_sample_id(sample_id)
        note_ = check_text(note, "note", max_len=5000)
        v = schema.votes

        def tx(conn: Connection) -> Vote:
            retracted = select(v.c.retracts).where(v.c.retracts.is_not(None))
            query = select(v).where(v.c.kind == "vote", v.c.annotator == name, v.c.id.not_in(retracted))
            if sample_id is not None:
                query = query.where(v.c.sample_id == sample_id)
            target = conn.execute(query.order_by(v.c.id.desc()).limit(1)).first()
            if target is None:
                where = f" on sample {sample_id}" if sample_id else ""
                raise NothingToUndoError(f"{name} has no vote{where} left to undo")
            return self._insert_vote(
                conn,
                sample_id=target.sample_id,
                kind="retract",
                age=None,
                annotator=name,
                source=target.source,
                note=note_,
                retracts=target.id,
            )

        return run_tx(self.engine, tx, retry_integrity=True)

    def votes(self, sample_id: str | None = None, *, annotator: str | None = None) -> list[Vote]:
        """Every vote row (retractions included), in insertion order."""
        query = select(schema.votes).order_by(schema.votes.c.id)
        if sample_id is not None:
            query = query.where(schema.votes.c.sample_id == check_sample_id(sample_id))
        if annotator is not None:
            query = query.where(schema.votes.c.annotator == check_annotator(annotator))
        return run_tx(self.engine, lambda conn: [self._vote(r) for r in conn.execute(query)], read_only=True)

    def votes_since(self, after_id: int, limit: int | None = None) -> list[Vote]:
        """Vote rows with an id above ``after_id``, oldest first: a primary-key range read, so a
        review queue keeps its state current per click without re-reading the table."""
        query = select(schema.votes).where(schema.votes.c.id > int(after_id)).order_by(schema.votes.c.id)
        if limit is not None:
            query = query.limit(limit)
        return run_tx(self.engine, lambda conn: [self._vote(r) for r in conn.execute(query)], read_only=True)

    def votes_by_sample(self, sample_ids: Sequence[str] | None = None) -> dict[str, list[Vote]]:
        """Vote rows grouped by sample (all samples, or these ids)."""

        def tx(conn: Connection) -> dict[str, list[Vote]]:
            if sample_ids is not None:
                return dict(self._sample_votes(conn, sample_ids))
            out: dict[str, list[Vote]] = defaultdict(list)
            for row in conn.execute(select(schema.votes).order_by(schema.votes.c.id)):
                out[row.sample_id].append(self._vote(row))
            return dict(out)

        return run_tx(self.engine, tx, read_only=True)

    # -- labels --------------------------------------------------------------------------------

    def labels(
        self, sample_ids: Sequence[str] | None = None, *, sources: Iterable[str] | None = None
    ) -> dict[str, Label]:
        """Current label of every known sample (or of these ids / sources); unknown ids are left out."""
        samples = self.samples(sample_ids, sources=sources)
        votes = self.votes_by_sample(
            [s.sample_id for s in samples] if (sample_ids is not None or sources is not None) else None
        )
        return {
            s.sample_id: aggregate(
                s.sample_id, votes.get(s.sample_id, []), original_label=s.original_label, rules=self.rules
            )
            for s in samples
        }

    def label(self, sample_id: str) -> Label:
        """Current label of one sample (UnknownSampleError if the store does not know it)."""
        found = self.labels([check_sample_id(sample_id)])
        if sample_id not in found:
            raise UnknownSampleError(f"unknown sample {sample_id}")
        return found[sample_id]

    # -- claims --------------------------------------------------------------------------------

    def claim(self, sample_id: str, annotator: str, ttl: float = DEFAULT_CLAIM_TTL) -> bool:
        """Lease a sample to an annotator for ``ttl`` seconds; False if someone else holds it.

        Atomic across processes: a conditional UPDATE takes over an expired (or own) lease, an
        INSERT guarded by the primary key creates a new one; the loser of a race gets False.
        Expiry uses the writers' clocks (UTC): keep annotator machines NTP-synced.
        """
        sample_id = check_sample_id(sample_id)
        name = check_annotator(annotator)
        c = schema.claims

        def tx(conn: Connection) -> bool:
            now = utcnow()
            values = dict(annotator=name, claimed_at=now, expires_at=now + timedelta(seconds=ttl))
            taken = conn.execute(
                update(c)
                .where(c.c.sample_id == sample_id, or_(c.c.expires_at <= now, c.c.annotator == name))
                .values(**values)
            )
            if taken.rowcount == 1:
                return True
            if conn.execute(select(c.c.sample_id).where(c.c.sample_id == sample_id)).first() is not None:
                return False
            conn.execute(insert(c).values(sample_id=sample_id, **values))
            return True

        try:
            return run_tx(self.engine, tx)
        except IntegrityError:
            return False

    def release(self, sample_id: str, annotator: str) -> None:
        """Give a claimed sample back (skip) so another annotator can take it at once."""
        c = schema.claims
        run_tx(
            self.engine,
            lambda conn: conn.execute(
                delete(c).where(
                    c.c.sample_id == check_sample_id(sample_id), c.c.annotator == check_annotator(annotator)
                )
            ),
        )

    def claim_holder(self, sample_id: str) -> tuple[str, datetime] | None:
        """(annotator, expiry) of the live claim on one sample, or None: one primary-key read."""
        c = schema.claims

        def tx(conn: Connection) -> tuple[str, datetime] | None:
            row = conn.execute(
                select(c).where(c.c.sample_id == check_sample_id(sample_id), c.c.expires_at > utcnow())
            ).first()
            return None if row is None else (row.annotator, as_utc(row.expires_at))

        return run_tx(self.engine, tx, read_only=True)

    def active_claims(self) -> dict[str, tuple[str, datetime]]:
        """sample id -> (annotator, expiry) of every unexpired claim."""
        c = schema.claims

        def tx(conn: Connection) -> dict[str, tuple[str, datetime]]:
            rows = conn.execute(select(c).where(c.c.expires_at > utcnow()))
            return {r.sample_id: (r.annotator, as_utc(r.expires_at)) for r in rows}

        return run_tx(self.engine, tx, read_only=True)

    # -- maintenance ---------------------------------------------------------------------------

    def fsck(self, *, clean: bool = False, verify: bool = False, grace: float = 600.0) -> Any:
        """Check database and images folder agree; see :func:`age_model.feedback.fsck.fsck`."""
        from .fsck import fsck

        return fsck(self, clean=clean, verify=verify, grace=grace)
