"""Which sample an annotator should see next.

A :class:`ReviewQueue` runs over a data set (rows with ``id``, ``image``, ``age``) or over the
stakeholders' submissions in the feedback store. Items are ordered by how likely their label is
wrong, ``|model age - label| / spread`` (worst first), where the label is the current aggregate
of the votes if any, else the original label. Contested items (``needs_another_look``,
``pending_second_opinion``) come before unreviewed ones because one more vote settles them.
Settled items, items the annotator has already voted on, and items another annotator holds a
live claim on are skipped. Claims are leases stored in the database (see
``FeedbackStore.claim``), so two annotators in different processes never get the same item at
the same moment; a claim ends with the vote, a skip, or its expiry.

Predictions come from the caller: a callable ``predict(images) -> (ages, spreads)`` called in
batches of PIL images, or precomputed ``(ages, spreads)`` aligned with the rows (spreads may be
None; ``{"age": ..., "spread": ...}`` is unambiguous), or for submissions a
``{sample_id: (age, spread)}`` mapping. ``AgePredictor.predict_crops`` fits the callable for a
data set of face crops; lists of ``PhotoResult`` / ``FaceEstimate`` are understood too. Without predictions the
submissions queue uses the model estimate recorded with the upload's vote.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from age_model.feedback import FeedbackStore, Status, UPLOAD_SOURCES, Vote, agreement
from age_model.feedback.store import DEFAULT_CLAIM_TTL
from age_model.feedback.validate import check_annotator

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

PredictFn = Callable[[list["PILImage.Image"]], Any]
Predictions = PredictFn | Sequence[Any] | Mapping[str, Any] | None
CONTESTED = (Status.NEEDS_ANOTHER_LOOK, Status.PENDING_SECOND_OPINION)


@dataclass(frozen=True)
class Candidate:
    """A sample the queue may hand out, with what is known before any vote."""

    sample_id: str
    source: str
    index: int | None = None  # row in the queue's data set; None for a store submission
    original_label: float | None = None
    original_name: str | None = None
    model_age: float | None = None
    model_spread: float | None = None


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


@dataclass(frozen=True)
class Progress:
    """Queue progress for the Stats tab: done means settled."""

    total: int
    done: int
    left: int
    by_status: dict[str, int]
    per_annotator: dict[str, int]  # active votes on this queue's samples


def _pair(value: Any) -> tuple[float | None, float | None]:
    """(age, spread) from a number, a pair, an object with ``age``/``spread`` (a FaceEstimate), or
    a photo result with ``faces`` (its most confident face; none found: unknown)."""
    if value is None:
        return None, None
    if hasattr(value, "faces"):
        faces = list(value.faces or [])
        return _pair(max(faces, key=lambda f: getattr(f, "score", 0.0))) if faces else (None, None)
    if hasattr(value, "age"):
        return float(value.age), (None if getattr(value, "spread", None) is None else float(value.spread))
    if isinstance(value, (tuple, list)):
        age, spread = (list(value) + [None])[:2]
        return (None if age is None else float(age)), (None if spread is None else float(spread))
    return float(value), None


def _is_column(value: Any, n: int) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) == n and (
        n == 0 or not hasattr(value[0], "__len__"))


def _arrays(predictions: Any, n: int) -> tuple[list[float | None], list[float | None]]:
    """Precomputed predictions as two lists of length n: (ages, spreads)."""
    if isinstance(predictions, Mapping):
        ages, spreads = predictions.get("age"), predictions.get("spread")
    else:
        seq = list(predictions)
        if len(seq) == 2 and _is_column(seq[0], n) and (seq[1] is None or _is_column(seq[1], n)):
            ages, spreads = seq
        elif len(seq) == n:  # one number or (age, spread) per row
            pairs = [_pair(v) for v in seq]
            ages, spreads = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            raise ValueError(f"predictions must be (ages, spreads) or one entry per row ({n}), got {len(seq)}")
    ages = [None if a is None else float(a) for a in ages]
    spreads = [None] * n if spreads is None else [None if s is None else float(s) for s in spreads]
    if len(ages) != n or len(spreads) != n:
        raise ValueError(f"predictions cover {len(ages)} ages / {len(spreads)} spreads for {n} rows")
    return ages, spreads


def _call(predict: PredictFn, images: list[Any]) -> tuple[list[float | None], list[float | None]]:
    return _arrays(predict(images), len(images))


def _row_ids(dataset: datasets.Dataset) -> list[str]:
    """The ``id`` column, or sha256 of each image's file bytes (what the data loader computes)."""
    if "id" in dataset.column_names:
        return [str(x) for x in dataset["id"]]
    import datasets as hf

    raw = dataset.cast_column("image", hf.Image(decode=False))
    ids = []
    for value in raw["image"]:
        data = value.get("bytes") or Path(value["path"]).read_bytes()
        ids.append(hashlib.sha256(data).hexdigest())
    return ids


class ReviewQueue:
    """Hands out samples worst label first, one annotator per sample at a time."""

    def __init__(
        self,
        store: FeedbackStore,
        candidates: Iterable[Candidate] | Callable[[], Iterable[Candidate]],
        *,
        dataset: datasets.Dataset | None = None,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        min_spread: float = 1.0,
        default_spread: float = 5.0,
        model_version: str | None = None,
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.claim_ttl = claim_ttl
        self.min_spread = min_spread
        self.default_spread = default_spread
        self.model_version = model_version
        self._source = candidates if callable(candidates) else None
        self._fixed = None if callable(candidates) else self._dedupe(candidates)

    @staticmethod
    def _dedupe(candidates: Iterable[Candidate]) -> list[Candidate]:
        seen: dict[str, Candidate] = {}
        for c in candidates:
            seen.setdefault(c.sample_id, c)
        return list(seen.values())

    def candidates(self) -> list[Candidate]:
        """Every sample of this queue, settled ones included (a submissions queue re-reads the store)."""
        return self._fixed if self._fixed is not None else self._dedupe(self._source())  # type: ignore[misc]

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def for_dataset(
        cls, store: FeedbackStore, dataset: datasets.Dataset, *, predictions: Predictions = None,
        source: str | None = None, batch_size: int = 32, **kwargs: Any,
    ) -> ReviewQueue:
        """A queue over a data set split; ``source`` names the data set (default: the rows'
        ``source`` column), and is what the store records for its samples and votes."""
        n = len(dataset)
        if "source" not in dataset.column_names and not source:
            raise ValueError("give source= (the data set's name) for rows without a 'source' column")
        ids = _row_ids(dataset)
        labels = [None if a is None else float(a) for a in dataset["age"]] if "age" in dataset.column_names else [None] * n
        sources = [source] * n if source else [str(s) for s in dataset["source"]]  # an explicit name wins
        name_col = next((c for c in ("file", "file_name", "original_name") if c in dataset.column_names), None)
        names = [None if x is None else str(x) for x in dataset[name_col]] if name_col else [None] * n
        if predictions is None:
            ages, spreads = [None] * n, [None] * n
        elif callable(predictions):
            ages, spreads = [], []
            for start in range(0, n, batch_size):
                a, s = _call(predictions, list(dataset.select(range(start, min(start + batch_size, n)))["image"]))
                ages += a
                spreads += s
        else:
            ages, spreads = _arrays(predictions, n)
        candidates = [
            Candidate(sample_id=ids[i], source=sources[i], index=i, original_label=labels[i],
                      original_name=names[i], model_age=ages[i], model_spread=spreads[i])
            for i in range(n)
        ]
        return cls(store, candidates, dataset=dataset, **kwargs)

    @classmethod
    def for_submissions(
        cls, store: FeedbackStore, *, predictions: Mapping[str, Any] | None = None,
        sources: Iterable[str] = UPLOAD_SOURCES, **kwargs: Any,
    ) -> ReviewQueue:
        """A queue over the stakeholders' uploads in the store, re-read on every call.

        ``predictions`` maps sample ids to ``(age, spread)``; without it each upload's recorded
        model estimate is used.
        """
        wanted = sorted(sources)

        def load() -> list[Candidate]:
            recorded = {} if predictions is not None else store.labels(sources=wanted)
            out = []
            for sample in store.samples(sources=wanted):
                if predictions is not None:
                    age, spread = _pair(predictions.get(sample.sample_id))
                else:
                    label = recorded.get(sample.sample_id)
                    age, spread = (label.model_age if label else None), None
                out.append(Candidate(sample_id=sample.sample_id, source=sample.source, original_label=sample.original_label,
                                     original_name=sample.original_name, model_age=age, model_spread=spread))
            return out

        return cls(store, load, **kwargs)

    # -- ordering and hand-out ---------------------------------------------------------------

    def _score(self, label: float | None, c: Candidate) -> float | None:
        if label is None or c.model_age is None:
            return None
        spread = self.default_spread if c.model_spread is None or not math.isfinite(c.model_spread) else c.model_spread
        return abs(c.model_age - label) / max(spread, self.min_spread)

    def items(self, annotator: str | None = None) -> list[ReviewItem]:
        """Open items in hand-out order; with ``annotator``: only those this annotator may take."""
        name = check_annotator(annotator) if annotator is not None else None
        cands = self.candidates()
        labels = self.store.labels([c.sample_id for c in cands])
        claims = self.store.active_claims()
        ranked = []
        for pos, c in enumerate(cands):
            lab = labels.get(c.sample_id)
            status = lab.status if lab else Status.UNREVIEWED
            if status == Status.SETTLED or (name and lab and name in lab.annotators):
                continue
            holder = claims.get(c.sample_id)
            if name and holder and holder[0] != name:
                continue
            label = lab.age if lab and lab.age is not None else c.original_label
            score = self._score(label, c)
            item = ReviewItem(
                sample_id=c.sample_id, source=c.source, index=c.index, label=label, model_age=c.model_age,
                model_spread=c.model_spread, score=score, status=status, num_votes=lab.num_votes if lab else 0,
                claimed_until=holder[1] if holder and holder[0] == name else None,
            )
            ranked.append(((0 if status in CONTESTED else 1, score is None, -(score or 0.0), pos), item))
        return [item for _, item in sorted(ranked, key=lambda r: r[0])]

    def next(self, annotator: str) -> ReviewItem | None:
        """Claim and return the next item for this annotator (the one they already hold, if any)."""
        name = check_annotator(annotator)
        items = self.items(name)
        held = [i for i in items if i.claimed_until is not None]
        for item in held + [i for i in items if i.claimed_until is None]:
            if self.store.claim(item.sample_id, name, ttl=self.claim_ttl):
                return replace(item, claimed_until=self.store.active_claims().get(item.sample_id, (None, None))[1])
        return None

    def skip(self, item: ReviewItem | str, annotator: str) -> None:
        """Give the item back so another annotator can take it now."""
        self.store.release(item if isinstance(item, str) else item.sample_id, annotator)

    def submit(
        self, item: ReviewItem | str, age: Any, annotator: str, *, note: str | None = None,
        consent: bool | None = None,
    ) -> Vote:
        """Record a vote on a queue item (registering a data set sample on first vote)."""
        sample_id = item if isinstance(item, str) else item.sample_id
        cand = next((c for c in self.candidates() if c.sample_id == sample_id), None)
        if cand is None:
            raise ValueError(f"sample {sample_id} is not in this review queue")
        self.store.register_samples([dict(sample_id=cand.sample_id, source=cand.source,
                                          original_name=cand.original_name, original_label=cand.original_label)])
        return self.store.add_vote(
            sample_id, age, annotator, model_age=cand.model_age, model_version=self.model_version,
            note=note, consent=consent,
        )

    def image(self, item: ReviewItem | str) -> PILImage.Image:
        """The item's picture: from the data set row, or from the store's images folder."""
        sample_id = item if isinstance(item, str) else item.sample_id
        index = item.index if isinstance(item, ReviewItem) else next(
            (c.index for c in self.candidates() if c.sample_id == sample_id), None)
        if index is not None and self.dataset is not None:
            return self.dataset[index]["image"]
        path = self.store.image_file(sample_id)
        if path is None:
            raise FileNotFoundError(f"no stored image for sample {sample_id}")
        from PIL import Image

        return Image.open(io.BytesIO(path.read_bytes()))

    # -- figures for the Stats tab -----------------------------------------------------------

    def progress(self) -> Progress:
        """Settled vs left over the whole queue, and each annotator's active votes on it."""
        ids = [c.sample_id for c in self.candidates()]
        labels = self.store.labels(ids)
        statuses = Counter(str(labels[i].status) if i in labels else str(Status.UNREVIEWED) for i in ids)
        per = Counter(name for lab in labels.values() for name in lab.annotators)
        done = statuses.get(str(Status.SETTLED), 0)
        return Progress(total=len(ids), done=done, left=len(ids) - done,
                        by_status=dict(statuses), per_annotator=dict(sorted(per.items())))

    def agreement(self, within: float = 5.0) -> dict[str, Any]:
        """Inter-annotator agreement over this queue's samples (see feedback.aggregate.agreement)."""
        return agreement(self.store.votes_by_sample([c.sample_id for c in self.candidates()]), within=within)
