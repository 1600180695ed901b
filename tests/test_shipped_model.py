"""The model committed under models/ is what `python app.py` loads: it must load and behave like one."""

from pathlib import Path

import pytest

from age_model.predictor import AgePredictor
from age_model.resources import DEFAULT_MODEL, default_model


@pytest.fixture(scope="module")
def shipped() -> AgePredictor:
    if not (DEFAULT_MODEL / "config.json").exists():
        pytest.fail(f"{DEFAULT_MODEL} is missing: the app would start without a model")
    return AgePredictor(DEFAULT_MODEL)


def test_app_defaults_to_the_shipped_model(monkeypatch):
    monkeypatch.delenv("AGE_MODEL", raising=False)
    assert Path(default_model()) == DEFAULT_MODEL


def test_shipped_model_orders_a_child_a_young_adult_and_a_senior(shipped, fixture_dir):
    photos = [fixture_dir / "images" / name for name in ("fgnet_007A01.JPG", "fgnet_082A18.JPG", "fgnet_006A69.JPG")]
    results = shipped.predict(photos)  # real ages 1, 18 and 69, uncropped photos of another data set
    ages = [result.faces[0].age for result in results]
    assert ages[0] < 10 < ages[1] < 40 < ages[2]
    assert all(0 < result.faces[0].spread < 20 for result in results)


def test_shipped_model_carries_its_serving_settings(shipped):
    settings = shipped.settings
    assert settings.faces == "detect" and settings.calibration_mae
    assert settings.image_size % 32 == 0  # EfficientNet is exact at multiples of 32
