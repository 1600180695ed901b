"""ONNX export and the ONNX Runtime path of the predictor, on tiny random models of every head."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from age_model.export import ONNX_FILE, export_onnx
from age_model.export import main as export_main
from age_model.predictor import AgePredictor
from tests.conftest import make_tiny_model


@pytest.fixture(scope="module", params=["regression", "gaussian", "bins"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_tiny_model(tmp_path_factory.mktemp(f"onnx_{request.param}"), head=request.param)
    assert export_main([str(folder)]) == 0
    assert (folder / ONNX_FILE).is_file() and (folder / "handler.py").is_file()
    return folder


def test_onnx_runtime_gives_the_torch_logits(exported: Path) -> None:
    onnx, torch_ = AgePredictor(exported), AgePredictor(exported, backend="torch")
    assert (onnx.backend, torch_.backend) == ("onnxruntime", "torch")
    pixels = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)  # batch size not the exported 2
    assert np.abs(onnx.logits(pixels) - torch_.logits(pixels)).max() <= 1e-4


def test_onnx_runtime_gives_the_torch_ages_on_photos(exported: Path, fixture_dir: Path) -> None:
    photos = sorted((fixture_dir / "images").glob("fgnet_*"))[:3]
    onnx, torch_ = AgePredictor(exported).predict(photos), AgePredictor(exported, backend="torch").predict(photos)
    for a, b in zip(onnx, torch_):
        assert len(a.faces) == len(b.faces) >= 1
        assert [f.age for f in a.faces] == pytest.approx([f.age for f in b.faces], abs=1e-4)
        assert [f.spread for f in a.faces] == pytest.approx([f.spread for f in b.faces], abs=1e-4)


def test_flip_tta_is_one_batch_of_two(exported: Path) -> None:
    predictor = AgePredictor(exported)
    seen: list[tuple[int, ...]] = []
    runner = predictor.runner
    predictor.runner = lambda pixels: (seen.append(pixels.shape), runner(pixels))[1]
    predictor.predict_crops([Image.new("RGB", (80, 90), "gray")])
    assert seen == [(2, 3, 64, 64)]


def test_a_stale_onnx_file_is_not_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = make_tiny_model(tmp_path / "m")
    export_onnx(folder)
    other = make_tiny_model(tmp_path / "retrained")  # new random weights saved over the old ones
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    assert AgePredictor(folder).backend == "torch"
    assert "python -m age_model.export" in caplog.text
    with pytest.raises(ValueError, match="age_model.export"):
        AgePredictor(folder, backend="onnxruntime")


def test_export_refuses_a_folder_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_main([str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
