"""Errors of the feedback store.

Every bad input raises a subclass of :class:`FeedbackError`, itself a ``ValueError``, *before*
anything is written, so a caller (the Annotate tab, the CLI) can show the message as it is and
know that the store is unchanged.
"""

from __future__ import annotations


class FeedbackError(ValueError):
    """Bad input to the feedback store; nothing was stored."""


class InvalidAgeError(FeedbackError):
    """The age is not a number or lies outside the accepted range."""


class InvalidAnnotatorError(FeedbackError):
    """The annotator name is empty or not a string."""


class InvalidImageError(FeedbackError):
    """The bytes are not an image Pillow can decode."""


class InvalidFieldError(FeedbackError):
    """Another field (source, note, consent, sample id) has the wrong type or shape."""


class UnknownSampleError(FeedbackError):
    """No sample with this id is in the store."""


class NothingToUndoError(FeedbackError):
    """The annotator has no vote left that could be retracted."""


class StoreURLError(FeedbackError):
    """The store URL is malformed, of an unsupported kind, or lacks an images folder."""


class StoreConnectionError(FeedbackError):
    """The database behind a well-formed URL could not be opened."""
