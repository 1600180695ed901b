"""Plain records the store hands out: samples, votes, labels, and the rules that make a label.

Kept free of SQLAlchemy so that review, export and merge code (and tests) can build and read
them without a database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from age_model.ages import AGE_RANGE

UPLOAD_SOURCES = frozenset({"upload", "webcam"})  # stakeholder submissions; everything else is a data set
AGE_MIN, AGE_MAX = AGE_RANGE
# Votes from the public page are signed "public:<pseudonym>". Annotator logins cannot contain ':'
# (the annotators file is name:password), so no team member can ever be mistaken for a stranger.
PUBLIC_PREFIX = "public:"


def is_public_submitter(annotator: str) -> bool:
    """True for a vote cast on the public page (unverified), False for a logged-in annotator."""
    return annotator.startswith(PUBLIC_PREFIX)


class Status(enum.StrEnum):
    """Where a sample's label stands.

    - ``unreviewed``: no active vote (never voted on, or every vote was retracted).
    - ``unverified``: only strangers on the public page have voted; their age is kept and shown to
      annotators but never trains, never overrides a label and never settles anything.
    - ``needs_another_look``: at least two annotators and their votes disagree: the standard
      deviation exceeds ``LabelRules.disagreement_std``.
    - ``pending_second_opinion``: the aggregate crosses a legal age (18, 25) relative to the label
      it replaces, and no two annotators on the new side agree within
      ``LabelRules.second_opinion_tolerance`` yet.
    - ``settled``: none of the above; the aggregate is the sample's label. Only settled labels are
      used for retraining and skipped by the review queue.
    """

    UNREVIEWED = "unreviewed"
    UNVERIFIED = "unverified"
    NEEDS_ANOTHER_LOOK = "needs_another_look"
    PENDING_SECOND_OPINION = "pending_second_opinion"
    SETTLED = "settled"


@dataclass(frozen=True)
class LabelRules:
    """Thresholds that turn votes into a status; one object so the store, queue and card agree."""

    disagreement_std: float = 5.0
    second_opinion_ages: tuple[float, ...] = (18.0, 25.0)
    second_opinion_tolerance: float = 5.0
    require_second_opinion: bool = True


@dataclass(frozen=True)
class Sample:
    """One image the store knows, identified by the sha256 of its file bytes."""

    sample_id: str
    source: str
    original_name: str | None
    original_label: float | None
    image_path: Path | None  # absolute path of the stored bytes; None when only the id is known
    first_seen: datetime


@dataclass(frozen=True)
class Vote:
    """One row of the votes table: a vote (``kind='vote'``) or the retraction of one."""

    id: int
    sample_id: str
    kind: str  # "vote" or "retract"
    age: float | None
    annotator: str
    created_at: datetime
    source: str
    previous_label: float | None = None
    model_age: float | None = None
    model_version: str | None = None
    note: str | None = None
    consent: bool | None = None
    retracts: int | None = None


@dataclass(frozen=True)
class Label:
    """A sample's current label: the aggregate of each annotator's latest active vote."""

    sample_id: str
    status: Status
    age: float | None  # mean of the active votes
    age_std: float | None  # population std (0 with one vote), as APPA-REAL's apparent ages
    num_votes: int  # active votes, one per annotator
    annotators: tuple[str, ...] = ()
    reference_label: float | None = None  # the label the votes replace (original, else first previous_label)
    crossed: tuple[float, ...] = field(default=())  # legal ages the aggregate crosses vs the reference
    consent: bool | None = None  # latest explicit consent among the non-retracted votes
    model_age: float | None = None  # latest model estimate recorded with a vote
    model_version: str | None = None
