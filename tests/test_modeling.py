import numpy as np
import torch

from age_model.modeling import AgeSettings, calibrated_spread, fit_calibration, load_age_model, outputs_to_age
from tests.conftest import make_tiny_model


def test_tiny_model_round_trip(tiny_model_dir):
    model, processor, settings = load_age_model(str(tiny_model_dir))
    assert settings.head == "regression" and settings.age_mean == 35.0
    from PIL import Image

    batch = processor(images=[Image.new("RGB", (100, 80), "gray")], return_tensors="pt")
    assert tuple(batch["pixel_values"].shape) == (1, 3, 64, 64)
    with torch.inference_mode():
        logits = model(**batch).logits
    age, spread = outputs_to_age(logits, settings)
    assert age.shape == (1,) and spread is None


def test_outputs_to_age_heads():
    reg = AgeSettings(head="regression", age_mean=30, age_std=10)
    age, _ = outputs_to_age(np.array([[0.0], [1.5]]), reg)
    assert np.allclose(age, [30, 45])
    gauss = AgeSettings(head="gaussian", age_mean=30, age_std=10)
    age, sigma = outputs_to_age(np.array([[1.0, np.log(0.25)]]), gauss)
    assert np.allclose(age, [40]) and np.allclose(sigma, [5.0])
    bins = AgeSettings(head="bins")
    logits = np.full((1, 101), -1e4)
    logits[0, 20] = logits[0, 22] = 0.0
    age, sigma = outputs_to_age(logits, bins)
    assert np.allclose(age, [21]) and np.allclose(sigma, [1.0])


def test_calibration_grows_with_error():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 90, 2000)
    pred = true + rng.normal(0, 1 + true / 10)  # noisier for the old
    edges, maes = fit_calibration(pred, true)
    settings = AgeSettings(calibration_edges=edges, calibration_mae=maes)
    young, old = calibrated_spread(np.array([5.0, 85.0]), settings)
    assert old > 2 * young


def test_bins_and_gaussian_models_load(tmp_path):
    for head in ("gaussian", "bins"):
        model, _, settings = load_age_model(str(make_tiny_model(tmp_path / head, head=head)))
        assert model.config.num_labels == settings.num_outputs()
