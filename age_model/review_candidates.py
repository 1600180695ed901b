"""What becomes a review item: data set rows, stored submissions, conflicting-duplicate groups, and
the model's predictions for them in whatever shape the caller has (a callable, columns, objects).

``age_model.review.ReviewQueue`` takes the :class:`Candidate` lists built here; keeping the shapes
apart keeps the queue about the protocol only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class Candidate:
    """A sample (or a group of near-duplicate samples) the queue may hand out."""

    sample_id: str  # the item's id; for a group, its first member
    source: str
    index: int | None = None  # row in the queue's data set; None for a store submission
    original_label: float | None = None
    original_name: str | None = None
    model_age: float | None = None
    model_spread: float | None = None
    # A conflicting-duplicate group, one entry per row (byte-identical copies share an id): ids, labels,
    # data set rows, file names; the first row is the item's own.
    members: tuple[str, ...] = ()
    member_labels: tuple[float | None, ...] = ()
    member_indexes: tuple[int | None, ...] = ()
    member_names: tuple[str | None, ...] = ()

    @property
    def sample_ids(self) -> tuple[str, ...]:
        """The distinct samples one decision on this item labels."""
        return tuple(dict.fromkeys(self.members)) if self.members else (self.sample_id,)


def estimate_pair(value: Any) -> tuple[float | None, float | None]:
    """(age, spread) from a number, a pair, an object with ``age``/``spread`` (a FaceEstimate), or
    a photo result with ``faces`` (its most confident face; none found: unknown)."""
    if value is None:
        return None, None
    if hasattr(value, "faces"):
        faces = list(value.faces or [])
        return estimate_pair(max(faces, key=lambda f: getattr(f, "score", 0.0))) if faces else (None, None)
    if hasattr(value, "age"):
        return float(value.age), (None if getattr(value, "spread", None) is None else float(value.spread))
    if isinstance(value, (tuple, list)):
        age, spread = (list(value) + [None])[:2]
        return (None if age is None else float(age)), (None if spread is None else float(spread))
    return float(value), None


def _is_column(value: Any, n: int) -> bool:
    return (
        hasattr(value, "__len__")
        and not isinstance(value, (str, bytes))
        and len(value) == n
        and (n == 0 or not hasattr(value[0], "__len__"))
    )


def prediction_arrays(predictions: Any, n: int) -> tuple[list[float | None], list[float | None]]:
    """Precomputed predictions as two lists of length n: (ages, spreads)."""
    if isinstance(predictions, Mapping):
        ages, spreads = predictions.get("age"), predictions.get("spread")
    else:
        seq = list(predictions)
        if len(seq) == 2 and _is_column(seq[0], n) and (seq[1] is None or _is_column(seq[1], n)):
            ages, spreads = seq
        elif len(seq) == n:  # one number or (age, spread) per row
            pairs = [estimate_pair(v) for v in seq]
            ages, spreads = [p[0] for p in pairs], [p[1] for p in pairs]
        else:
            raise ValueError(f"predictions must be (ages, spreads) or one entry per row ({n}), got {len(seq)}")
    ages = [None if a is None else float(a) for a in ages]
    spreads = [None] * n if spreads is None else [None if s is None else float(s) for s in spreads]
    if len(ages) != n or len(spreads) != n:
        raise ValueError(f"predictions cover {len(ages)} ages / {len(spreads)} spreads for {n} rows")
    return ages, spreads


def _columns(dataset: datasets.Dataset, names: Sequence[str]) -> dict[str, list[Any]]:
    """Whole columns as lists through Arrow (iterating ``dataset[name]`` costs 0.3 s per column at 24k rows)."""
    return dataset.select_columns(list(names)).to_dict() if names else {}


def row_ids(dataset: datasets.Dataset) -> list[str]:
    """The ``id`` column, or sha256 of each image's file bytes (what the data loader computes)."""
    if "id" in dataset.column_names:
        return [str(x) for x in _columns(dataset, ["id"])["id"]]
    import datasets as hf

    raw = dataset.cast_column("image", hf.Image(decode=False))
    ids = []
    for value in raw["image"]:
        data = value.get("bytes") or Path(value["path"]).read_bytes()
        ids.append(hashlib.sha256(data).hexdigest())
    return ids


def dataset_candidates(dataset: datasets.Dataset, source: str | None = None) -> list[Candidate]:
    """One unscored candidate per row (``source``: the data set's name, else the rows' column)."""
    n = len(dataset)
    columns = dataset.column_names
    if "source" not in columns and not source:
        raise ValueError("give source= (the data set's name) for rows without a 'source' column")
    ids = row_ids(dataset)
    name_col = next((c for c in ("file", "file_name", "original_name") if c in columns), None)
    table = _columns(dataset, [c for c in ("age", "source", name_col) if c and c in columns])
    labels = [None if a is None else float(a) for a in table["age"]] if "age" in table else [None] * n
    sources = [source] * n if source else [str(s) for s in table["source"]]  # an explicit name wins
    names = [None if x is None else str(x) for x in table[name_col]] if name_col else [None] * n
    return [
        Candidate(sample_id=ids[i], source=sources[i], index=i, original_label=labels[i], original_name=names[i])
        for i in range(n)
    ]


def submission_candidate(sample: Any, predictions: Mapping[str, Any] | None) -> Candidate:
    """A stored upload as a candidate; its score from ``predictions`` (None: the recorded estimate)."""
    age, spread = None, None
    if predictions is not None:
        try:
            age, spread = estimate_pair(predictions.get(sample.sample_id))
        except Exception:  # an unreadable stored image: unscored
            age, spread = None, None
    return Candidate(
        sample_id=sample.sample_id,
        source=sample.source,
        original_label=sample.original_label,
        original_name=sample.original_name,
        model_age=age,
        model_spread=spread,
    )


def group_candidates(groups: Iterable[Mapping[str, Any]], index_of: Mapping[str, int] | None = None) -> list[Candidate]:
    """Candidates from ``age_model.data.conflicting_groups``: one per group, its members side by side."""
    out = []
    for group in groups:
        ids = tuple(str(i) for i in group["ids"])
        if len(ids) < 2:
            continue
        ages = tuple(None if a is None else float(a) for a in group["ages"])
        names = tuple(None if f is None else str(f) for f in group["files"])
        indexes = tuple((index_of or {}).get(m) for m in ids)
        out.append(
            Candidate(
                sample_id=ids[0],
                source=str(group["sources"][0] or "data set"),
                index=indexes[0],
                original_label=None,
                original_name=f"conflict group {group['group']}",
                members=ids,
                member_labels=ages,
                member_indexes=indexes,
                member_names=names,
            )
        )
    return out
