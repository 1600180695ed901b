"""The review protocol: which item an annotator sees next, and every rule about voting on it.

A :class:`ReviewQueue` runs over a data set (rows with ``id``, ``image``, ``age``), over the
stakeholders' submissions in the feedback store (uploads, webcam captures and the public page's
unverified reports), or over groups of near-duplicate images whose labels conflict. It owns the
whole protocol, so the Annotate page, an API caller and a script meet the same rules:

- :meth:`~ReviewQueue.next` claims and returns the annotator's next item (the one they hold, after
  a reload); ``after=`` moves on from the item on screen. :meth:`~ReviewQueue.claim` takes one
  named item, :meth:`~ReviewQueue.batch` up to N at once for the bulk grid.
- :meth:`~ReviewQueue.submit` records a vote (``confirm=True``: the current label) and refuses an
  item another annotator holds, an item the annotator already voted on, and a confirm without a
  label; :meth:`~ReviewQueue.submit_batch` records a grid's decisions in one transaction.
- :meth:`~ReviewQueue.skip` gives an item back and puts it aside for this annotator until
  everything else was seen; :meth:`~ReviewQueue.undo` retracts the annotator's last decision (a
  group decision as a whole) and hands its item back.

Order: contested items first (``needs_another_look``, ``pending_second_opinion``: one more vote
settles them), then by suspicion ``|model age - label| / spread``, worst first. An item the model
has not scored yet ranks as ``UNSCORED_SUSPICION`` (a typical suspicion), ties broken by how close
its label lies to a legal age (18, 25: where a wrong label costs most), so a queue opens before
any scoring and unscored items interleave sensibly with scored ones. Settled items, the
annotator's own votes and items another annotator holds a live claim on are passed over.

Cost per click is constant in the queue's size: the queue keeps each item's label in memory and
brings it up to date from the votes appended since its last look (a primary-key range read, so
votes cast by other processes count too); the open items are kept sorted and the next item is
found from the front of that order. Claims are leases in the database (``FeedbackStore.claim``),
so two annotators in different processes never get the same item at the same moment.
"""

from __future__ import annotations

import bisect
import io
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from age_model.ages import AGE_RANGE
from age_model.feedback import UPLOAD_SOURCES, FeedbackError, FeedbackStore, Label, Status, Vote, aggregate, agreement
from age_model.feedback.store import DEFAULT_CLAIM_TTL
from age_model.feedback.validate import check_annotator
from age_model.review_candidates import (  # noqa: F401  (Candidate and the builders are part of this API)
    Candidate,
    dataset_candidates,
    group_candidates,
    prediction_arrays,
    row_ids,
    submission_candidate,
)

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

PredictFn = Callable[[list["PILImage.Image"]], Any]
Predictions = PredictFn | Sequence[Any] | Mapping[str, Any] | None
CONTESTED = (Status.NEEDS_ANOTHER_LOOK, Status.PENDING_SECOND_OPINION)
STATUS_URGENCY = (
    Status.NEEDS_ANOTHER_LOOK,
    Status.PENDING_SECOND_OPINION,
    Status.UNVERIFIED,
    Status.UNREVIEWED,
    Status.SETTLED,
)
UNSCORED_SUSPICION = 1.0  # rank of an item without a model score: about the median |z| of a fair model
SYNC_OVERLAP = 64  # vote ids re-read below the newest seen: PostgreSQL may commit ids out of order
CANDIDATES_PER_TRY = 8  # items tried per claim round before the order is read again


class ReviewError(FeedbackError):
    """A review action the rules refuse; the message says what to do instead. Nothing was stored."""


class HeldByOtherError(ReviewError):
    """Another annotator holds a live claim on the item."""


class AlreadyVotedError(ReviewError):
    """The annotator has an active vote on the item already."""


class NotInQueueError(ReviewError):
    """The sample is not part of this queue."""


class NothingToConfirmError(ReviewError):
    """A confirm on an item that has no label."""


@dataclass(frozen=True)
class ReviewItem:
    """What the Annotate tab shows: the sample, its current label and the model's view of it."""

    sample_id: str
    source: str
    index: int | None
    label: float | None  # current aggregate if voted, else the original label
    model_age: float | None
    model_spread: float | None
    score: float | None  # |model - label| / spread; None when either is unknown
    status: Status
    num_votes: int
    claimed_until: datetime | None = None
    original_name: str | None = None
    members: tuple[str, ...] = ()  # a group: every member id
    member_labels: tuple[float | None, ...] = ()
    reports: tuple[tuple[str, float], ...] = ()  # unverified reports from the public page: (pseudonym, age)


@dataclass(frozen=True)
class Progress:
    """Queue progress for the page and the Stats tab: done means settled."""

    total: int
    done: int
    left: int
    by_status: dict[str, int]
    per_annotator: dict[str, int]  # active votes on this queue's items


@dataclass
class _Entry:
    """The queue's live state of one item."""

    cand: Candidate
    pos: int
    label: Label
    votes: list[Vote] = field(default_factory=list)
    key: tuple | None = None  # its place in the open order; None: not open (settled)


# ----------------------------------------------------------------------------- the queue


class ReviewQueue:
    """Hands out items worst label first, one annotator per item at a time, and records decisions."""

    def __init__(
        self,
        store: FeedbackStore,
        candidates: Iterable[Candidate],
        *,
        dataset: datasets.Dataset | None = None,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        min_spread: float = 1.0,
        default_spread: float = 5.0,
        model_version: str | None = None,
        accept: Callable[[Any], bool] | None = None,
        predictions: Mapping[str, Any] | None = None,
        kind: str = "dataset",
    ) -> None:
        """``accept(sample)``: also take samples that appear in the store later (the submissions
        queue: new uploads); ``predictions`` maps their ids to ``(age, spread)``."""
        self.store = store
        self.dataset = dataset
        self.claim_ttl = claim_ttl
        self.min_spread = min_spread
        self.default_spread = default_spread
        self.model_version = model_version
        self.kind = kind
        self._accept = accept
        self._predictions = predictions
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._member_of: dict[str, str] = {}  # group member id -> the group's item id
        self._order: list[tuple] = []  # keys of the open items, sorted: the hand-out order
        self._status_counts: Counter[str] = Counter()
        self._per_annotator: Counter[str] = Counter()
        self._skipped: dict[str, set[str]] = defaultdict(set)
        self._closer_look: dict[str, set[str]] = defaultdict(set)  # grid cards marked wrong: next() serves them first
        self._last_vote_id = 0
        self._applied: set[int] = set()
        self._thresholds = tuple(store.rules.second_opinion_ages) or (18.0,)
        with self._lock:
            self._load(list(candidates))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def for_dataset(
        cls,
        store: FeedbackStore,
        dataset: datasets.Dataset,
        *,
        predictions: Predictions = None,
        source: str | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> ReviewQueue:
        """A queue over a data set split; ``source`` names the data set (default: the rows'
        ``source`` column), and is what the store records for its samples and votes."""
        candidates = dataset_candidates(dataset, source)
        n = len(candidates)
        if predictions is not None:
            if callable(predictions):
                ages, spreads = [], []
                for start in range(0, n, batch_size):
                    images = list(dataset.select(range(start, min(start + batch_size, n)))["image"])
                    a, s = prediction_arrays(predictions(images), len(images))
                    ages += a
                    spreads += s
            else:
                ages, spreads = prediction_arrays(predictions, n)
            candidates = [replace(c, model_age=a, model_spread=s) for c, a, s in zip(candidates, ages, spreads)]
        return cls(store, candidates, dataset=dataset, **kwargs)

    @classmethod
    def for_submissions(
        cls,
        store: FeedbackStore,
        *,
        predictions: Mapping[str, Any] | None = None,
        sources: Iterable[str] = UPLOAD_SOURCES,
        **kwargs: Any,
    ) -> ReviewQueue:
        """A queue over the stakeholders' uploads and the public page's reports in the store; new
        ones join as they arrive. ``predictions`` maps sample ids to ``(age, spread)``; without it
        each upload's recorded model estimate is used."""
        wanted = frozenset(sources)
        initial = [submission_candidate(s, predictions) for s in store.samples(sources=sorted(wanted))]
        return cls(
            store,
            initial,
            accept=lambda sample: sample.source in wanted,
            predictions=predictions,
            kind="submissions",
            **kwargs,
        )

    @classmethod
    def for_groups(
        cls,
        store: FeedbackStore,
        groups: Iterable[Mapping[str, Any]],
        *,
        dataset: datasets.Dataset | None = None,
        **kwargs: Any,
    ) -> ReviewQueue:
        """A queue of conflicting near-duplicate groups (``age_model.data.conflicting_groups``) of
        ``dataset``: one decision labels every member, so the group is settled at once."""
        index_of = {} if dataset is None else {i: k for k, i in enumerate(row_ids(dataset))}
        return cls(store, group_candidates(groups, index_of), dataset=dataset, kind="groups", **kwargs)

    def _load(self, cands: list[Candidate]) -> None:
        """Start-up: every vote in one ordered read, then each item's label (the only full pass)."""
        rows = self.store.votes_since(0)
        by_sample: dict[str, list[Vote]] = defaultdict(list)
        for vote in rows:
            by_sample[vote.sample_id].append(vote)
        self._applied.update(v.id for v in rows)
        self._last_vote_id = max((v.id for v in rows), default=0)
        self._add_candidates(cands, by_sample)

    def _add_candidates(self, cands: list[Candidate], votes: Mapping[str, list[Vote]]) -> None:
        """Register new items with the votes known for them so far."""
        placed: list[tuple] = []
        for cand in cands:
            if cand.sample_id in self._entries or cand.sample_id in self._member_of:
                continue
            own = list(votes.get(cand.sample_id, []))
            entry = _Entry(cand=cand, pos=len(self._entries), votes=own, label=self._aggregate(cand, own))
            self._recorded_estimate(entry)
            self._entries[cand.sample_id] = entry
            for member in cand.sample_ids[1:]:
                self._member_of.setdefault(member, cand.sample_id)
            self._count(entry.label, +1)
            self._place(entry, insert=False)
            if entry.key is not None:
                placed.append(entry.key)
        self._order.extend(placed)
        self._order.sort()  # one sort for a batch: start-up stays O(n log n)

    def _aggregate(self, cand: Candidate, votes: list[Vote]) -> Label:
        """The item's label; a group's is its least settled member's (each decision gives every member
        the same age, so a member's label is the same votes against its own original label)."""
        if not cand.members:
            return aggregate(cand.sample_id, votes, original_label=cand.original_label, rules=self.store.rules)
        labels = [
            aggregate(cand.sample_id, votes, original_label=original, rules=self.store.rules)
            for original in dict.fromkeys(cand.member_labels)
        ]
        return min(labels, key=lambda label: STATUS_URGENCY.index(label.status))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _count(self, label: Label, sign: int) -> None:
        self._status_counts[str(label.status)] += sign
        for name in label.annotators:
            self._per_annotator[name] += sign

    def _current_label(self, entry: _Entry) -> float | None:
        """The aggregate of the votes (a public report's age while only strangers spoke), else the original."""
        return entry.label.age if entry.label.age is not None else entry.cand.original_label

    def _score(self, entry: _Entry) -> float | None:
        label, c = self._current_label(entry), entry.cand
        if label is None or c.model_age is None:
            return None
        spread = self.default_spread if c.model_spread is None or not math.isfinite(c.model_spread) else c.model_spread
        return abs(c.model_age - label) / max(spread, self.min_spread)

    def _prior(self, entry: _Entry) -> float:
        """Cheap tie-break for unscored items: how close the label lies to a legal age (or, for a
        group, how far apart its labels are: wider first)."""
        if entry.cand.members:
            known = [a for a in entry.cand.member_labels if a is not None]
            return -(max(known) - min(known)) if known else 0.0
        label = self._current_label(entry)
        return 999.0 if label is None else min(abs(label - t) for t in self._thresholds)

    def _place(self, entry: _Entry, insert: bool = True) -> None:
        """Move the item to its place in the open order (or out of it, once settled); ``insert=False``:
        only compute its key (the caller sorts a batch in)."""
        if entry.key is not None:
            at = bisect.bisect_left(self._order, entry.key)
            if at < len(self._order) and self._order[at] == entry.key:
                del self._order[at]
            entry.key = None
        if entry.label.status == Status.SETTLED:
            return
        score = self._score(entry)
        rank = UNSCORED_SUSPICION if score is None else score
        entry.key = (
            0 if entry.label.status in CONTESTED else 1,
            -rank,
            self._prior(entry),
            entry.pos,
            entry.cand.sample_id,
        )
        if insert:
            bisect.insort(self._order, entry.key)

    @staticmethod
    def _recorded_estimate(entry: _Entry) -> None:
        """A submission without a score of ours ranks by the model estimate recorded with its vote."""
        if entry.cand.model_age is None and entry.cand.index is None and entry.label.model_age is not None:
            entry.cand = replace(entry.cand, model_age=entry.label.model_age)

    def _relabel(self, entry: _Entry) -> None:
        self._count(entry.label, -1)
        entry.label = self._aggregate(entry.cand, entry.votes)
        self._recorded_estimate(entry)
        self._count(entry.label, +1)
        self._place(entry)

    def sync(self) -> int:
        """Apply the votes appended since the last look (by anyone, in any process); returns how many."""
        with self._lock:
            rows = self.store.votes_since(max(0, self._last_vote_id - SYNC_OVERLAP))
            new = [v for v in rows if v.id not in self._applied]
            if not new:
                return 0
            unknown = {
                v.sample_id for v in new if v.sample_id not in self._entries and v.sample_id not in self._member_of
            }
            if unknown and self._accept is not None:
                samples = [s for s in self.store.samples(sorted(unknown)) if self._accept(s)]
                self._add_candidates([submission_candidate(s, self._predictions) for s in samples], {})
            touched: dict[str, _Entry] = {}
            for vote in new:
                self._applied.add(vote.id)
                self._last_vote_id = max(self._last_vote_id, vote.id)
                entry = self._entries.get(vote.sample_id)
                if entry is not None:
                    entry.votes.append(vote)
                    touched[vote.sample_id] = entry
            for entry in touched.values():
                entry.votes.sort(key=lambda v: v.id)
                self._relabel(entry)
            return len(new)

    def set_scores(self, scores: Mapping[str, tuple[float | None, float | None]]) -> int:
        """Give items their model scores (the background scorer calls this per batch); returns how many."""
        changed = 0
        with self._lock:
            bulk = len(scores) > 256  # many at once (a cache read at start): re-sort once instead of moving each
            for sample_id, (age, spread) in scores.items():
                entry = self._entries.get(sample_id)
                if entry is None or age is None:
                    continue
                entry.cand = replace(
                    entry.cand, model_age=float(age), model_spread=None if spread is None else float(spread)
                )
                if bulk:
                    entry.key = None
                    self._place(entry, insert=False)
                else:
                    self._place(entry)
                changed += 1
            if bulk:
                self._order = sorted(e.key for e in self._entries.values() if e.key is not None)
        return changed

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._entries

    def candidates(self) -> list[Candidate]:
        """Every item of this queue, settled ones included."""
        with self._lock:
            return [e.cand for e in self._entries.values()]

    def candidate(self, sample_id: str) -> Candidate:
        """The queue's item ``sample_id``; raises NotInQueueError when this queue has no such item."""
        return self._entry(sample_id).cand

    def _entry(self, sample_id: str) -> _Entry:
        entry = self._entries.get(sample_id)
        if entry is None:
            raise NotInQueueError(f"sample {str(sample_id)[:12]} is not in this review queue: press Next (N).")
        return entry

    @staticmethod
    def _refuse_a_second_vote(entry: _Entry, name: str) -> None:
        if name in entry.label.annotators:
            raise AlreadyVotedError(
                "You have already voted on this item. Undo (U) takes your last vote back; Next (N) moves on."
            )

    def _item(self, entry: _Entry, claimed_until: datetime | None = None) -> ReviewItem:
        reports = (
            tuple(
                (v.annotator, float(v.age))
                for v in entry.votes  # type: ignore[arg-type]
                if v.kind == "vote" and v.annotator.startswith("public:")
            )
            if entry.cand.index is None
            else ()
        )
        c = entry.cand
        return ReviewItem(
            sample_id=c.sample_id,
            source=c.source,
            index=c.index,
            label=self._current_label(entry),
            model_age=c.model_age,
            model_spread=c.model_spread,
            score=self._score(entry),
            status=entry.label.status,
            num_votes=entry.label.num_votes,
            claimed_until=claimed_until,
            original_name=c.original_name,
            members=c.members,
            member_labels=c.member_labels,
            reports=reports,
        )

    def item(self, sample_id: str) -> ReviewItem:
        """The item's current view (after applying new votes)."""
        self.sync()
        with self._lock:
            return self._item(self._entry(sample_id))

    def label(self, sample_id: str) -> Label:
        with self._lock:
            return self._entry(sample_id).label

    def items(self, annotator: str | None = None) -> list[ReviewItem]:
        """Open items in hand-out order; with ``annotator``: only those this annotator may take.
        Reads the whole order: for tests and reports, never per click."""
        name = check_annotator(annotator) if annotator is not None else None
        self.sync()
        claims = self.store.active_claims()
        with self._lock:
            out = []
            for key in self._order:
                entry = self._entries[key[-1]]
                holder = claims.get(entry.cand.sample_id)
                if name and (name in entry.label.annotators or (holder and holder[0] != name)):
                    continue
                out.append(self._item(entry, holder[1] if holder and holder[0] == name else None))
            return out

    def _eligible(
        self, name: str, claims: Mapping[str, tuple[str, datetime]], skipped: set[str], limit: int, exclude: set[str]
    ) -> list[str]:
        """The first ``limit`` open items this annotator may take, from the front of the order."""
        out = []
        for key in self._order:
            sample_id = key[-1]
            if sample_id in skipped or sample_id in exclude:
                continue
            holder = claims.get(sample_id)
            if (holder and holder[0] != name) or name in self._entries[sample_id].label.annotators:
                continue
            out.append(sample_id)
            if len(out) >= limit:
                break
        return out

    # -- the protocol --------------------------------------------------------------------------

    def next(self, annotator: str, *, after: str | None = None) -> ReviewItem | None:
        """Claim and return this annotator's next item: the one they already hold (a reload gives
        it back), else the first they may take. ``after``: the item on screen, given back first
        (put aside like a skip), so Next always moves on."""
        name = check_annotator(annotator)
        if after:
            self.skip(after, name)
        self.sync()
        claims = self.store.active_claims()  # live leases only: a small table
        held = self._held(name, claims)
        held.sort(key=lambda sid: sid not in self._closer_look[name])  # cards marked wrong in the grid first
        for sample_id in held:
            if self.store.claim(sample_id, name, ttl=self.claim_ttl):
                return self._claimed(sample_id, name)
        tried: set[str] = set()
        for passes in range(2):  # the second pass: the items this annotator skipped, once nothing else is left
            while True:
                with self._lock:
                    skipped = self._skipped[name] if passes == 0 else set()
                    ids = self._eligible(name, claims, skipped, CANDIDATES_PER_TRY, tried)
                if not ids:
                    break
                for sample_id in ids:
                    tried.add(sample_id)
                    if self.store.claim(sample_id, name, ttl=self.claim_ttl):
                        if passes == 1:
                            self._skipped[name].clear()
                        return self._claimed(sample_id, name)
        return None

    def _held(self, name: str, claims: Mapping[str, tuple[str, datetime]]) -> list[str]:
        """This annotator's live claims on open items of this queue they have not voted on."""
        with self._lock:
            return [
                sid
                for sid, (who, _) in claims.items()
                if who == name
                and sid in self._entries
                and self._entries[sid].label.status != Status.SETTLED
                and name not in self._entries[sid].label.annotators
            ]

    def set_aside(self, items: Iterable[ReviewItem | str], annotator: str) -> None:
        """Grid cards marked wrong: kept claimed by this annotator, left out of their next grids and
        handed to them first by :meth:`next` for a closer look (until the claim expires)."""
        name = check_annotator(annotator)
        for item in items:
            sample_id = item if isinstance(item, str) else item.sample_id
            if sample_id in self._entries and self.store.claim(sample_id, name, ttl=self.claim_ttl):
                self._closer_look[name].add(sample_id)

    def _claimed(self, sample_id: str, name: str) -> ReviewItem:
        holder = self.store.claim_holder(sample_id)
        with self._lock:
            return self._item(self._entries[sample_id], holder[1] if holder and holder[0] == name else None)

    def claim(self, sample_id: str, annotator: str) -> ReviewItem:
        """Take one named item (after an undo, or from a link); refuses what the rules refuse."""
        name = check_annotator(annotator)
        self.sync()
        with self._lock:
            self._refuse_a_second_vote(self._entry(sample_id), name)
        if not self.store.claim(sample_id, name, ttl=self.claim_ttl):
            holder = self.store.claim_holder(sample_id)
            raise HeldByOtherError(
                f"{holder[0] if holder else 'Someone'} is reviewing this item right now: "
                "press Next (N) for another one."
            )
        self._skipped[name].discard(sample_id)
        return self._claimed(sample_id, name)

    def batch(self, annotator: str, size: int = 12) -> list[ReviewItem]:
        """Claim up to ``size`` items for the bulk grid (the ones already held first)."""
        name = check_annotator(annotator)
        self.sync()
        claims = self.store.active_claims()
        got: list[ReviewItem] = []
        tried: set[str] = set()
        aside = self._closer_look[name]
        held = [sid for sid in self._held(name, claims) if sid not in aside]
        tried.update(aside)
        for sample_id in held[:size]:
            tried.add(sample_id)
            if self.store.claim(sample_id, name, ttl=self.claim_ttl):
                got.append(self._claimed(sample_id, name))
        while len(got) < size:
            with self._lock:
                ids = self._eligible(name, claims, self._skipped[name], size - len(got), tried)
            if not ids:
                break
            for sample_id in ids:
                tried.add(sample_id)
                if self.store.claim(sample_id, name, ttl=self.claim_ttl):
                    got.append(self._claimed(sample_id, name))
        return got

    def _check_vote(self, name: str, sample_id: str, age: Any, confirm: bool) -> tuple[_Entry, Any]:
        """The rules of a vote, enforced before anything is written; returns the age to record."""
        with self._lock:
            entry = self._entry(sample_id)
            self._refuse_a_second_vote(entry, name)
            if confirm:
                age = self._current_label(entry)
                if age is None:
                    raise NothingToConfirmError(
                        "This item has no label to confirm: type the age you see and press Correct (Enter)."
                    )
            elif age is None or age == "":
                raise ReviewError(
                    f"Type the age you see ({AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years), then press Correct or Enter."
                )
            return entry, age

    def _vote_records(self, entry: _Entry, age: Any, name: str, note: str | None) -> list[dict[str, Any]]:
        c = entry.cand
        return [
            dict(
                sample_id=sid,
                age=age,
                annotator=name,
                model_age=c.model_age if sid == c.sample_id else None,
                model_version=self.model_version,
                note=note,
            )
            for sid in c.sample_ids
        ]

    def _register(self, entries: Iterable[_Entry]) -> None:
        """Data set samples join the store on their first vote (known by id, no bytes kept)."""
        if self.kind == "submissions":
            return  # stored with their image already
        rows: dict[str, dict[str, Any]] = {}
        for entry in entries:
            c = entry.cand
            ids = c.members or (c.sample_id,)
            labels = c.member_labels or (c.original_label,)
            names = c.member_names or (c.original_name,)
            for sid, lab, n in zip(ids, labels, names):
                rows.setdefault(sid, dict(sample_id=sid, source=c.source, original_name=n, original_label=lab))
        if rows:
            self.store.register_samples(list(rows.values()))

    def _check_holder(self, sample_id: str, name: str) -> None:
        holder = self.store.claim_holder(sample_id)
        if holder is not None and holder[0] != name:
            raise HeldByOtherError(f"{holder[0]} is reviewing this item right now: press Next (N) for another one.")

    def submit(
        self,
        item: ReviewItem | str,
        age: Any = None,
        annotator: str = "",
        *,
        confirm: bool = False,
        note: str | None = None,
        consent: bool | None = None,
    ) -> Vote:
        """Record a vote on an item (for a group: the same age on every member, in one commit).

        Refused, before anything is written: an item another annotator holds, an item this
        annotator already voted on, a confirm of an item without a label, a correction without an age.
        """
        sample_id = item if isinstance(item, str) else item.sample_id
        name = check_annotator(annotator)
        self.sync()
        entry, age = self._check_vote(name, sample_id, age, confirm)
        self._check_holder(sample_id, name)
        self._register([entry])
        records = self._vote_records(entry, age, name, note)
        if consent is not None:
            for record in records:
                record["consent"] = consent
        votes = self.store.add_votes(records)
        self._skipped[name].discard(sample_id)
        self._closer_look[name].discard(sample_id)
        self.sync()
        return votes[0]

    def submit_batch(self, annotator: str, decisions: Sequence[tuple[str, Any]]) -> list[Vote]:
        """Record a grid's decisions in one transaction: ``(sample_id, age)`` pairs, age None to
        confirm the current label. Every decision is checked first; one refusal stores nothing."""
        name = check_annotator(annotator)
        self.sync()
        checked = []
        for sample_id, age in decisions:
            entry, value = self._check_vote(name, sample_id, age, confirm=age is None or age == "")
            self._check_holder(sample_id, name)
            checked.append((entry, value))
        self._register(e for e, _ in checked)
        records = [r for entry, value in checked for r in self._vote_records(entry, value, name, None)]
        votes = self.store.add_votes(records) if records else []
        self.sync()
        return votes

    def skip(self, item: ReviewItem | str, annotator: str) -> None:
        """Give the item back so another annotator can take it now, and put it aside for this one."""
        sample_id = item if isinstance(item, str) else item.sample_id
        name = check_annotator(annotator)
        self.store.release(sample_id, name)
        self._closer_look[name].discard(sample_id)
        if sample_id in self._entries:
            self._skipped[name].add(sample_id)

    def undo(self, annotator: str, *, current: str | None = None) -> tuple[Vote, ReviewItem | None]:
        """Retract this annotator's last decision (anywhere in the store; a group decision as a
        whole) and, if its item is in this queue, claim it back so it can be voted on again.
        ``current``: the item on screen, given back when the undone one takes its place."""
        name = check_annotator(annotator)
        retraction = self.store.undo(name, note="undone in the Annotate tab")
        self.sync()
        item_id = self._member_of.get(retraction.sample_id, retraction.sample_id)
        entry = self._entries.get(item_id)
        if entry is not None and entry.cand.members:
            for member in entry.cand.sample_ids:
                if member != retraction.sample_id and name in self._member_label_annotators(member):
                    self.store.undo(name, member, note="undone in the Annotate tab (group decision)")
            self.sync()
        if entry is None:
            return retraction, None
        if not self.store.claim(item_id, name, ttl=self.claim_ttl):
            return retraction, None
        if current and current != item_id:
            self.store.release(current, name)
        self._skipped[name].discard(item_id)
        return retraction, self._claimed(item_id, name)

    def _member_label_annotators(self, sample_id: str) -> tuple[str, ...]:
        votes = self.store.votes(sample_id)
        return aggregate(sample_id, votes, rules=self.store.rules).annotators

    # -- pictures ------------------------------------------------------------------------------

    def image(self, item: ReviewItem | str, member: int = 0) -> PILImage.Image:
        """The item's picture (for a group: its ``member``-th image), from the data set row or the
        store's images folder."""
        sample_id = item if isinstance(item, str) else item.sample_id
        cand = self.candidate(sample_id)
        index = cand.member_indexes[member] if cand.members else cand.index
        if index is not None and self.dataset is not None:
            return self.dataset[index]["image"]
        sample_id = cand.members[member] if cand.members else cand.sample_id
        path = self.store.image_file(sample_id)
        if path is None:
            raise FileNotFoundError(f"no stored image for sample {sample_id}")
        from PIL import Image

        return Image.open(io.BytesIO(path.read_bytes()))

    # -- figures for the page and the Stats tab -------------------------------------------------

    def progress(self) -> Progress:
        """Settled vs left over the whole queue, and each annotator's active votes on it (kept per vote)."""
        self.sync()
        with self._lock:
            statuses = {k: v for k, v in self._status_counts.items() if v}
            done = statuses.get(str(Status.SETTLED), 0)
            per = {k: v for k, v in sorted(self._per_annotator.items()) if v}
            return Progress(
                total=len(self._entries),
                done=done,
                left=len(self._entries) - done,
                by_status=statuses,
                per_annotator=per,
            )

    def votes_by_item(self) -> dict[str, list[Vote]]:
        """Every item's vote rows (from memory)."""
        self.sync()
        with self._lock:
            return {sid: list(e.votes) for sid, e in self._entries.items() if e.votes}

    def agreement(self, within: float = 5.0) -> dict[str, Any]:
        """Inter-annotator agreement over this queue's items (see feedback.aggregate.agreement),
        with Krippendorff's alpha (interval) beside the raw figures."""
        from age_model.feedback.aggregate import krippendorff_alpha

        votes = self.votes_by_item()
        return {**agreement(votes, within=within), "alpha": krippendorff_alpha(votes)}
