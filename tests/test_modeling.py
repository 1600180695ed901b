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


def test_spread_scale_covers_the_target_on_every_source():
    import numpy as np

    from age_model.modeling import fit_spread_scale

    rng = np.random.default_rng(0)
    errors = np.concatenate([rng.normal(0, 2, 500), rng.normal(0, 8, 500)])  # source b is four times worse
    spreads = np.full(1000, 2.0)
    groups = ["a"] * 500 + ["b"] * 500
    scale, coverage = fit_spread_scale(errors, spreads, groups, target=0.7)
    assert coverage["a"] >= 0.7 and coverage["b"] >= 0.7
    assert abs(coverage["b"] - 0.7) < 0.02  # the worst source sets the scale, and only just
    assert fit_spread_scale(np.zeros(10), np.ones(10))[0] == 1.0  # never narrower than the spread was


def test_calibrate_cli_writes_the_scale_and_the_predictor_uses_it(tmp_path, fixture_dir):
    import json
    import shutil

    import numpy as np
    from PIL import Image

    from age_model.calibrate import main as calibrate_main
    from age_model.predictor import AgePredictor
    from tests.conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "model", faces="cropped")
    data = tmp_path / "utk"
    shutil.copytree(fixture_dir / "images", data)
    for path in data.glob("fgnet_*"):
        path.unlink()
    for path in data.glob("utk_*"):
        path.rename(data / path.name[4:])
    crops = [Image.open(p).convert("RGB") for p in sorted(data.glob("*.jpg"))[:4]]
    before = AgePredictor(str(model)).predict_crops(crops)[1]
    assert calibrate_main([str(model), "--data", f"{data}:train:cropped", "--target", "0.9"]) == 0
    settings = json.loads((model / "config.json").read_text())["agecheck"]
    assert settings["spread_scale"] >= 1.0 and settings["spread_coverage"]
    after = AgePredictor(str(model)).predict_crops(crops)[1]
    assert np.allclose(after, before * settings["spread_scale"], rtol=1e-4)


def test_folding_keeps_the_ages_and_plain_transformers_reads_years(tmp_path):
    """Save-time folding: agecheck's ages unchanged; pipeline("image-classification") gives years or
    a probability per age; an older (unfolded) folder still loads with the same ages."""
    from PIL import Image
    from transformers import pipeline

    from age_model.modeling import fold_into_head
    from age_model.predictor import AgePredictor

    crops = [Image.new("RGB", (70, 90), c) for c in ("gray", "white", "olive")]
    for head in ("regression", "gaussian", "bins"):
        old = make_tiny_model(tmp_path / f"old_{head}", head=head)
        before = AgePredictor(old, backend="torch").predict_crops(crops)
        model, processor, settings = load_age_model(str(old))
        fold_into_head(model, settings)
        fold_into_head(model, settings)  # idempotent
        new = tmp_path / f"new_{head}"
        model.save_pretrained(new)
        processor.save_pretrained(new)
        after = AgePredictor(new, backend="torch").predict_crops(crops)
        assert np.allclose(after[0], before[0], atol=1e-3) and np.allclose(after[1], before[1], atol=1e-3)
        assert np.allclose(AgePredictor(old, backend="torch").predict_crops(crops)[0], before[0])  # old still loads
        scores = pipeline("image-classification", model=str(new))(crops[0], top_k=1000)
        if head == "bins":
            assert len(scores) == 101 and abs(sum(s["score"] for s in scores) - 1) < 1e-4
            expected = sum(int(s["label"]) * s["score"] for s in scores)
            assert abs(expected - before[0][0]) < 0.05
        else:
            age = next(s["score"] for s in scores if s["label"] == "age")
            assert abs(age - before[0][0]) < 0.05


def test_crop_defaults_have_one_home():
    """AgeSettings' crop fields, the training CLI's and a bare CropSpec() must frame a face the same way."""
    from dataclasses import fields

    from age_model.faces.crops import DEFAULT_CROP, CropSpec
    from age_model.training import ModelArguments

    assert AgeSettings().crop == CropSpec() == DEFAULT_CROP
    stored = {f.name: f.default for f in fields(AgeSettings)}
    spec = {f.name: f.default for f in fields(CropSpec)}
    assert (stored["crop_style"], stored["crop_margin"], stored["align_scale"], stored["align_shift"]) == (
        spec["style"],
        spec["margin"],
        spec["align_scale"],
        spec["align_shift"],
    )
    cli = ModelArguments()
    assert (cli.crop_style, cli.crop_margin) == (DEFAULT_CROP.style, DEFAULT_CROP.margin)


def test_an_old_config_without_crop_fields_crops_like_appa_real():
    """Models saved before the crop fields existed framed faces as the box plus 40 % per side: they still do."""
    from transformers import PretrainedConfig

    from age_model.faces.crops import CropSpec, crop_quad

    before_crop_fields = {"head": "regression", "faces": "detect", "image_size": 224}
    old = AgeSettings.from_config(PretrainedConfig(agecheck=before_crop_fields))
    assert old.crop == CropSpec(style="box", margin=0.4)
    # box 100 x 50 at (10, 20): 40 px more left and right, 20 px more above and below
    np.testing.assert_array_equal(crop_quad((10, 20, 110, 70), old.crop), [[-30, 0], [150, 0], [150, 90], [-30, 90]])


def test_the_crop_round_trips_through_the_stored_fields():
    from transformers import PretrainedConfig

    from age_model.faces.crops import CropSpec

    settings = AgeSettings()
    settings.crop = CropSpec(style="aligned", align_scale=0.6243, align_shift=0.5368)
    config = PretrainedConfig()
    settings.save_to_config(config)
    assert config.agecheck["crop_style"] == "aligned" and config.agecheck["align_scale"] == 0.6243
    assert "crop" not in config.agecheck
    assert AgeSettings.from_config(config).crop == settings.crop
