"""From votes to a label: which votes count, their mean and spread, the status, and agreement.

Pure functions over :class:`Vote` records so the rules are testable without a database and the
same code serves the store, the review queue and the dataset card.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .records import Label, LabelRules, Status, Vote, is_public_submitter


def active_votes(votes: Iterable[Vote]) -> list[Vote]:
    """Each annotator's latest vote that has not been retracted (one voice per annotator)."""
    votes = list(votes)
    retracted = {v.retracts for v in votes if v.kind == "retract"}
    latest: dict[str, Vote] = {}
    for vote in sorted((v for v in votes if v.kind == "vote" and v.id not in retracted), key=lambda v: v.id):
        latest[vote.annotator] = vote
    return sorted(latest.values(), key=lambda v: v.id)


def crossed_ages(reference: float | None, age: float, thresholds: Sequence[float]) -> tuple[float, ...]:
    """Legal ages with the reference on one side and the new age on the other."""
    if reference is None:
        return ()
    return tuple(t for t in thresholds if (reference < t) != (age < t))


def _has_second_opinion(ages: Sequence[float], mean: float, crossed: Sequence[float], tolerance: float) -> bool:
    """Two annotators on the new side of every crossed age agree within the tolerance."""
    side = [a for a in ages if all((a < t) == (mean < t) for t in crossed)]
    return any(abs(a - b) <= tolerance for a, b in itertools.combinations(side, 2))


def aggregate(
    sample_id: str,
    votes: Iterable[Vote],
    *,
    original_label: float | None = None,
    rules: LabelRules = LabelRules(),
) -> Label:
    """Aggregate one sample's vote rows (retractions included) into its label and status."""
    rows = sorted(votes, key=lambda v: v.id)
    live = active_votes(rows)
    retracted = {v.retracts for v in rows if v.kind == "retract"}
    consent = next(
        (v.consent for v in reversed(rows) if v.kind == "vote" and v.id not in retracted and v.consent is not None),
        None,
    )
    reference = original_label
    if reference is None:
        reference = next((v.previous_label for v in rows if v.kind == "vote" and v.previous_label is not None), None)
    with_model = [v for v in live if v.model_age is not None]
    model = with_model[-1] if with_model else None
    common = dict(
        sample_id=sample_id,
        reference_label=reference,
        consent=consent,
        model_age=model.model_age if model else None,
        model_version=model.model_version if model else None,
    )
    if not live:
        return Label(status=Status.UNREVIEWED, age=None, age_std=None, num_votes=0, **common)
    team = [v for v in live if not is_public_submitter(v.annotator)]
    if not team:  # only strangers have spoken: their word is a lead for annotators, never a label
        public_ages = [float(v.age) for v in live]  # type: ignore[arg-type]
        return Label(
            status=Status.UNVERIFIED, age=math.fsum(public_ages) / len(public_ages), age_std=None, num_votes=0, **common
        )
    live = team
    ages = [float(v.age) for v in live]  # type: ignore[arg-type]
    mean = math.fsum(ages) / len(ages)
    std = math.sqrt(math.fsum((a - mean) ** 2 for a in ages) / len(ages))
    crossed = crossed_ages(reference, mean, rules.second_opinion_ages)
    if len(ages) >= 2 and std > rules.disagreement_std:
        status = Status.NEEDS_ANOTHER_LOOK
    elif (
        crossed
        and rules.require_second_opinion
        and not _has_second_opinion(ages, mean, crossed, rules.second_opinion_tolerance)
    ):
        status = Status.PENDING_SECOND_OPINION
    else:
        status = Status.SETTLED
    return Label(
        status=status,
        age=mean,
        age_std=std,
        num_votes=len(live),
        annotators=tuple(v.annotator for v in live),
        crossed=crossed,
        **common,
    )


def agreement(votes_by_sample: Mapping[str, Iterable[Vote]], within: float = 5.0) -> dict[str, Any]:
    """Inter-annotator agreement over samples with two or more annotators.

    Pairs are formed from each annotator's latest active vote per sample. Returns the overall
    mean pairwise |difference|, the share of pairs within ``within`` years (key ``within_5`` for
    the default), and the same per
    annotator (over the pairs they are part of), plus each annotator's active vote count.
    """
    diffs: list[float] = []
    per: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    multi = 0
    for votes in votes_by_sample.values():
        live = [v for v in active_votes(votes) if not is_public_submitter(v.annotator)]
        for v in live:
            counts[v.annotator] += 1
        if len(live) < 2:
            continue
        multi += 1
        for a, b in itertools.combinations(live, 2):
            d = abs(float(a.age) - float(b.age))  # type: ignore[arg-type]
            diffs.append(d)
            per[a.annotator].append(d)
            per[b.annotator].append(d)

    key = f"within_{within:g}"  # "within_5": share of pairs at most 5 years apart

    def summary(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"pairs": 0, "mean_abs_diff": None, key: None}
        return {
            "pairs": len(values),
            "mean_abs_diff": math.fsum(values) / len(values),
            key: sum(d <= within for d in values) / len(values),
        }

    return {
        "samples_with_multiple_annotators": multi,
        **summary(diffs),
        "per_annotator": {name: {"votes": counts[name], **summary(per.get(name, []))} for name in sorted(counts)},
    }


def krippendorff_alpha(votes_by_sample: Mapping[str, Iterable[Vote]]) -> float | None:
    """Krippendorff's alpha (interval metric) of the team's active votes: 1 is perfect agreement,
    0 what chance gives. None until some sample has two annotators (alpha needs pairs)."""
    rows: dict[str, dict[str, float]] = {}
    for sample_id, votes in votes_by_sample.items():
        live = [v for v in active_votes(votes) if not is_public_submitter(v.annotator)]
        if len(live) >= 2:
            rows[sample_id] = {v.annotator: float(v.age) for v in live}  # type: ignore[arg-type]
    if not rows:
        return None
    import krippendorff
    import numpy as np

    annotators = sorted({name for votes in rows.values() for name in votes})
    matrix = np.full((len(annotators), len(rows)), np.nan)
    for column, votes in enumerate(rows.values()):
        for name, age in votes.items():
            matrix[annotators.index(name), column] = age
    ages = matrix[~np.isnan(matrix)]
    if ages.size and float(ages.max() - ages.min()) == 0.0:
        return 1.0  # every vote the same age: perfect agreement (the formula divides by zero)
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval"))
