import math

import evaluate
import pytest

from age_model.metrics import AGE_ERROR_PATH, load_age_error


def test_metric_loads_offline_and_matches_hand_computed_values():
    metric = load_age_error()
    # true ages 5 (minor), 16 (minor), 30 (adult), 60 (adult); predictions off by 1, 10, 4, 6
    result = metric.compute(predictions=[6, 26, 24, 54], references=[5, 16, 30, 60], threshold=25)
    assert result["mae"] == pytest.approx((1 + 10 + 6 + 6) / 4)
    assert result["rmse"] == pytest.approx(math.sqrt((1 + 100 + 36 + 36) / 4))
    assert result["cs5"] == pytest.approx(1 / 4)
    assert result["mae_under13"] == pytest.approx(1)
    assert result["mae_13_17"] == pytest.approx(10)
    assert result["mae_25_34"] == pytest.approx(6)
    assert math.isnan(result["mae_65plus"])
    assert result["minors_passed_rate"] == pytest.approx(1 / 2)  # the 16-year-old estimated 26
    assert result["adults_flagged_rate"] == pytest.approx(1 / 2)  # the 30-year-old estimated 24
    assert result["n"] == 4


def test_threshold_changes_policy_figures():
    metric = evaluate.load(AGE_ERROR_PATH)
    result = metric.compute(predictions=[19, 19], references=[17, 30], threshold=18)
    assert result["minors_passed_rate"] == 1.0 and result["adults_flagged_rate"] == 0.0
