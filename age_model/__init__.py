"""agecheck: face age estimation, training and label review."""

__version__ = "0.1.0"
