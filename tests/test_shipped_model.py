"""The model committed under models/ is what `python app.py` loads: it must load and behave like one."""

import json
from pathlib import Path

import pytest

from age_model.faces.crops import CropSpec
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
    stored = json.loads((DEFAULT_MODEL / "config.json").read_text())["agecheck"]  # the crop it was trained with
    assert settings.crop == CropSpec(
        style=stored["crop_style"],
        margin=stored["crop_margin"],
        align_scale=stored["align_scale"],
        align_shift=stored["align_shift"],
    )


def test_shipped_model_runs_on_onnx_runtime_and_its_handler_answers(shipped, fixture_dir):
    """model.onnx is current (not refused as stale) and handler.py gives the predictor's own answer."""
    import importlib.util

    from age_model.export import weights_digest

    assert shipped.backend == "onnxruntime", "models/agecheck-default/model.onnx is missing or stale: re-export it"
    spec = importlib.util.spec_from_file_location("shipped_handler", DEFAULT_MODEL / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.EndpointHandler(str(DEFAULT_MODEL))
    photo = fixture_dir / "images" / "fgnet_082A18.JPG"
    answer = handler({"inputs": photo.read_bytes(), "parameters": {"threshold": 25}})
    expected = shipped.predict(photo)[0].faces
    assert [f["age"] for f in answer["faces"]] == pytest.approx([round(f.age, 2) for f in expected], abs=0.01)
    assert answer["faces"][0]["verdict"] in ("ask for ID", "no ID needed")
    assert "error" in handler({"inputs": "not base64 at all!"}) and "error" in handler(
        {"inputs": b"", "parameters": {"threshold": "25"}}
    )
    assert weights_digest(DEFAULT_MODEL)


def test_plain_transformers_pipeline_gives_the_age_on_a_crop(shipped, fixture_dir):
    """The card's transformers-only snippet: a probability per age, whose expectation is agecheck's age."""
    from transformers import pipeline

    from age_model.faces import load_image

    photo = load_image(fixture_dir / "images" / "fgnet_082A18.JPG")
    _, crops = shipped.find_faces(photo)
    scores = pipeline("image-classification", model=str(DEFAULT_MODEL))(crops[0], top_k=101)
    assert len(scores) == 101 and sum(s["score"] for s in scores) == pytest.approx(1, abs=1e-4)
    age = sum(int(s["label"]) * s["score"] for s in scores)
    ours = shipped.predict_crops(crops[:1])[0][0]
    assert abs(age - ours) < 1.5  # the same model; only agecheck's flip TTA differs


def test_shipped_onnx_gives_the_torch_logits(shipped):
    """The exported graph (identity squeeze-excite layers left out) against the torch model as loaded."""
    import numpy as np
    import torch

    from age_model.modeling import drop_identity_squeeze_excite, load_age_model

    model, _, settings = load_age_model(str(DEFAULT_MODEL))
    pixels = np.random.default_rng(0).normal(size=(3, 3, settings.image_size, settings.image_size)).astype(np.float32)
    with torch.inference_mode():
        untouched = model(pixel_values=torch.from_numpy(pixels)).logits.numpy()
    assert drop_identity_squeeze_excite(model) == 16  # EfficientNet-Lite0's 16 blocks, each an exact identity
    assert np.abs(shipped.logits(pixels) - untouched).max() <= 1e-4
