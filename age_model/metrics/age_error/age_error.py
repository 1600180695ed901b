"""Age-estimation errors as a local `evaluate` module: MAE, RMSE, CS@5, MAE per age band, ID-check figures.

`evaluate.load("mae")` needs the Hub; this module loads offline with `evaluate.load(path)`.
"""

import datasets
import evaluate
import numpy as np

from age_model.ages import AGE_BANDS
from age_model.policy import asks_for_id

_DESCRIPTION = """
Errors of an age estimator in years. Besides MAE and RMSE:
- cs5: cumulative score, the share of estimates within 5 years of the truth;
- mae_<band>: MAE inside each true-age band (NaN when the band is empty);
- minors_passed_rate: share of under-18s estimated at or above the ID threshold (they would not be
  asked for ID: the figure a Challenge-25 policy must keep near zero);
- adults_flagged_rate: share of people aged at least the threshold estimated below it (customers
  needlessly asked for ID).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: estimated ages in years.
    references: true ages in years.
    threshold: the ID-check age (default 25).
    cs_years: tolerance for the cumulative score (default 5).
Returns: a dict of floats (see the description), plus `n`.
Example:
    >>> metric = evaluate.load("age_model/metrics/age_error")
    >>> metric.compute(predictions=[20, 30], references=[22, 40])["mae"]
    6.0
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AgeError(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, threshold: float = 25.0, cs_years: float = 5.0) -> dict:
        return age_errors(np.asarray(predictions, float), np.asarray(references, float), threshold, cs_years)


def age_errors(pred: np.ndarray, true: np.ndarray, threshold: float = 25.0, cs_years: float = 5.0) -> dict:
    """The same figures as plain numpy, for code that has arrays and no `evaluate`."""
    err = np.abs(pred - true)
    out = {
        "mae": float(err.mean()) if err.size else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if err.size else float("nan"),
        "cs5": float((err <= cs_years).mean()) if err.size else float("nan"),
    }
    for name, low, high in AGE_BANDS:
        in_band = (true >= low) & (true < high)
        out[f"mae_{name}"] = float(err[in_band].mean()) if in_band.any() else float("nan")
    minors = true < 18
    adults = true >= threshold
    asked = np.asarray(asks_for_id(pred, 0.0, threshold), dtype=bool)  # the app's rule on the point estimate
    out["minors_passed_rate"] = float((~asked[minors]).mean()) if minors.any() else float("nan")
    out["adults_flagged_rate"] = float(asked[adults].mean()) if adults.any() else float("nan")
    out["threshold"] = float(threshold)
    out["n"] = int(err.size)
    return out
