"""Feedback store: annotators' corrected ages as append-only votes, exported as a HF dataset.

Light on import (SQLAlchemy and Pillow only): ``export`` and ``merge`` pull in ``datasets``
when they are imported themselves.
"""

from .aggregate import active_votes, aggregate, agreement
from .errors import (
    FeedbackError,
    InvalidAgeError,
    InvalidAnnotatorError,
    InvalidFieldError,
    InvalidImageError,
    NothingToUndoError,
    StoreConnectionError,
    StoreURLError,
    UnknownSampleError,
)
from .fsck import FsckReport
from .images import sample_id_of, strip_metadata
from .records import (
    AGE_MAX,
    AGE_MIN,
    PUBLIC_PREFIX,
    UPLOAD_SOURCES,
    Label,
    LabelRules,
    Sample,
    Status,
    Vote,
    is_public_submitter,
)
from .store import FeedbackStore
from .urls import DEFAULT_URL, parse_store_url

__all__ = [
    "AGE_MAX",
    "AGE_MIN",
    "DEFAULT_URL",
    "PUBLIC_PREFIX",
    "UPLOAD_SOURCES",
    "is_public_submitter",
    "FeedbackError",
    "FeedbackStore",
    "FsckReport",
    "InvalidAgeError",
    "InvalidAnnotatorError",
    "InvalidFieldError",
    "InvalidImageError",
    "Label",
    "LabelRules",
    "NothingToUndoError",
    "Sample",
    "Status",
    "StoreConnectionError",
    "StoreURLError",
    "UnknownSampleError",
    "Vote",
    "active_votes",
    "aggregate",
    "agreement",
    "parse_store_url",
    "sample_id_of",
    "strip_metadata",
]
