"""Local evaluate modules (loadable offline): `evaluate.load(AGE_ERROR_PATH)`."""

from pathlib import Path

import evaluate

AGE_ERROR_PATH = str(Path(__file__).resolve().parent / "age_error")


def load_age_error() -> evaluate.EvaluationModule:
    """The age-error metric from the package itself; never touches the Hub."""
    return evaluate.load(AGE_ERROR_PATH)
