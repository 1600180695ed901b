"""age_model.predictor and the predict CLI on tiny random models and the shared fixture photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from age_model import predict as cli
from age_model.faces import detect_faces, load_image
from age_model.modeling import AgeSettings
from age_model.predictor import NO_FACE_MESSAGE, UNCALIBRATED_SPREAD, AgePredictor, combine_spread
from tests.conftest import REPO_ROOT, make_tiny_model


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> AgePredictor:
    return AgePredictor(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def photos(fixture_dir: Path) -> list[Path]:
    return sorted((fixture_dir / "images").glob("fgnet_*"))[:4]


@pytest.fixture(scope="module")
def gaussian_cropped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("gauss"), head="gaussian", faces="cropped")


def gradient_png(path: Path) -> Path:
    ramp = np.linspace(0, 255, 200, dtype=np.uint8)[None, :].repeat(150, 0)
    Image.fromarray(ramp).save(path)
    return path


def test_one_estimate_per_detected_face(predictor: AgePredictor, photos: list[Path]) -> None:
    results = predictor.predict(photos)
    assert len(results) == len(photos)
    for path, result in zip(photos, results):
        assert result.error is None and result.message is None
        expected = detect_faces(load_image(path))
        assert len(result.faces) == len(expected) >= 1
        for face, detected in zip(result.faces, expected):
            assert np.isfinite(face.age) and face.spread > 0
            assert face.score == pytest.approx(detected.score)
            width, height = result.size
            x0, y0, x1, y1 = face.box
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert result.seconds > 0


def test_batched_equals_one_by_one(predictor: AgePredictor, photos: list[Path]) -> None:
    together = predictor.predict(photos)
    alone = [predictor.predict(p)[0] for p in photos]
    for a, b in zip(together, alone):
        assert [f.age for f in a.faces] == pytest.approx([f.age for f in b.faces], abs=1e-3)


def test_small_batches_give_the_same_results(tiny_model_dir: Path, predictor: AgePredictor, photos: list[Path]) -> None:
    small = AgePredictor(tiny_model_dir, batch_size=1).predict(photos)
    for a, b in zip(small, predictor.predict(photos)):
        assert len(a.faces) == len(b.faces)
        assert [f.age for f in a.faces] == pytest.approx([f.age for f in b.faces], abs=1e-3)


def test_a_bad_file_keeps_the_others(predictor: AgePredictor, photos: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    results = predictor.predict([photos[0], broken, empty, photos[1]])
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "not an image" in results[1].error and "empty" in results[2].error
    assert results[1].faces == [] and results[0].faces and results[3].faces


def test_no_face_is_a_message_not_an_error(predictor: AgePredictor, tmp_path: Path) -> None:
    result = predictor.predict([gradient_png(tmp_path / "g.png")])[0]
    assert result.faces == [] and result.error is None and result.message == NO_FACE_MESSAGE


def test_inputs_of_every_kind(predictor: AgePredictor, photos: list[Path]) -> None:
    image = Image.open(photos[0])
    kinds = [photos[0], str(photos[0]), photos[0].read_bytes(), image, np.asarray(image.convert("RGB"))]
    ages = [r.faces[0].age for r in predictor.predict(kinds)]
    assert ages == pytest.approx([ages[0]] * len(kinds), abs=1e-3)


def test_tta_averages_the_mirror_image(tiny_model_dir: Path, fixture_dir: Path) -> None:
    crops = [Image.open(p).convert("RGB") for p in sorted((fixture_dir / "images").glob("utk_*"))[:4]]
    with_tta, without = AgePredictor(tiny_model_dir, tta=True), AgePredictor(tiny_model_dir, tta=False)
    mirrored = [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
    plain_ages, plain_spreads = without.predict_crops(crops)
    mirror_ages, _ = without.predict_crops(mirrored)
    tta_ages, tta_spreads = with_tta.predict_crops(crops)
    np.testing.assert_allclose(tta_ages, (plain_ages + mirror_ages) / 2, atol=1e-3)
    assert (plain_spreads == pytest.approx(UNCALIBRATED_SPREAD)) and (tta_spreads >= plain_spreads - 1e-6).all()


def test_predict_crops_batches(tiny_model_dir: Path, fixture_dir: Path) -> None:
    crops = [Image.open(p).convert("RGB") for p in sorted((fixture_dir / "images").glob("utk_*"))]
    small_batches = AgePredictor(tiny_model_dir, batch_size=3).predict_crops(crops)
    one_batch = AgePredictor(tiny_model_dir, batch_size=64).predict_crops(crops)
    assert small_batches[0].shape == (len(crops),)
    np.testing.assert_allclose(small_batches[0], one_batch[0], atol=1e-3)
    assert AgePredictor(tiny_model_dir).predict_crops([])[0].shape == (0,)


def test_cropped_model_uses_the_whole_image(gaussian_cropped_dir: Path, photos: list[Path]) -> None:
    predictor = AgePredictor(gaussian_cropped_dir)
    assert predictor.spread_basis == "head+flip"
    result = predictor.predict(photos[:1])[0]
    width, height = result.size
    assert len(result.faces) == 1
    assert result.faces[0].box == (0.0, 0.0, float(width), float(height)) and result.faces[0].score == 1.0
    assert result.faces[0].spread > 0


def test_spread_uses_head_calibration_and_flip() -> None:
    age = np.array([5.0, 30.0, 30.0, 70.0])
    calibrated = AgeSettings(calibration_edges=[0.0, 20.0, 50.0], calibration_mae=[2.0, 5.0, 9.0])
    np.testing.assert_allclose(combine_spread(age, None, None, calibrated), [2, 5, 5, 9])
    # the head's sigma counts where it is larger than the band's validation error
    sigma = np.array([1.0, 1.0, 20.0, 1.0])
    np.testing.assert_allclose(combine_spread(age, sigma, None, calibrated), [2, 5, 20 * np.sqrt(2 / np.pi), 9])
    # flip disagreement adds in quadrature: bigger disagreement, bigger spread
    spread = combine_spread(age, None, np.array([0.0, 0.0, 12.0, 0.0]), calibrated)
    assert spread[2] == pytest.approx(13.0) and spread[1] == pytest.approx(5.0)
    assert (combine_spread(age, None, None, AgeSettings()) == UNCALIBRATED_SPREAD).all()


def test_bad_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="train.py"):
        AgePredictor(tmp_path)


# --------------------------------------------------------------------------- CLI


def test_cli_json_lines_parse(tiny_model_dir: Path, photos: list[Path], tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    import cv2
    import torch

    threads = (torch.get_num_threads(), cv2.getNumThreads())
    try:
        code = cli.main(
            ["--model", str(tiny_model_dir), "--json", "--no-tta", "--threads", "1", str(photos[0]), str(broken)]
        )
        assert torch.get_num_threads() == 1
    finally:  # the option is process-wide: give the other tests their threads back
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == cli.EXIT_OK and len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["file"] == str(photos[0]) and first["error"] is None
    face = first["faces"][0]
    assert len(face["box"]) == 4 and face["spread"] > 0 and 0 < face["score"] <= 1 and np.isfinite(face["age"])
    assert second["faces"] == [] and "not an image" in second["error"]


def test_cli_table_and_exit_codes(tiny_model_dir: Path, photos: list[Path], tmp_path: Path, capsys) -> None:
    assert cli.main(["--model", str(tiny_model_dir), str(photos[0]), str(gradient_png(tmp_path / "g.png"))]) == 0
    out = capsys.readouterr().out
    assert "age" in out.splitlines()[0] and photos[0].name in out and "No face found" in out
    missing = tmp_path / "missing.jpg"
    assert cli.main(["--model", str(tiny_model_dir), str(missing)]) == cli.EXIT_ALL_FAILED
    assert cli.main(["--model", str(tmp_path / "no-model"), str(photos[0])]) == cli.EXIT_USAGE
    assert "train.py" in capsys.readouterr().err


def test_cli_default_model_comes_from_env(monkeypatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("AGE_MODEL", str(tiny_model_dir))
    assert cli.default_model() == str(tiny_model_dir)  # the CLI asks the one home, age_model.resources
    monkeypatch.delenv("AGE_MODEL")
    assert cli.default_model() == str(REPO_ROOT / "models" / "agecheck-default")


def test_cli_runs_as_a_module(tiny_model_dir: Path, photos: list[Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "age_model.predict", "--json", "--model", str(tiny_model_dir), str(photos[0])],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["faces"]


def test_load_predictor_by_name_raises_a_typed_error(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Library code says what went wrong with an exception, never SystemExit; the CLI turns it into exit 2."""
    from age_model.predictor import ModelLoadError, load_predictor

    assert load_predictor(tiny_model_dir, tta=False, score_threshold=0.5).score_threshold == 0.5
    with pytest.raises(ModelLoadError, match="no age model at .*no-model .as named"):
        load_predictor(tmp_path / "no-model")
    monkeypatch.setenv("AGE_MODEL", str(tmp_path / "gone"))
    with pytest.raises(ModelLoadError, match="gone .the default"):
        load_predictor()
    with pytest.raises(ModelLoadError, match="Unknown backend"):
        load_predictor(tiny_model_dir, backend="tensorrt")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="could not load"):
        load_predictor(tmp_path / "broken")


def test_cli_face_score_is_not_the_id_threshold(tiny_model_dir: Path, photos: list[Path], capsys) -> None:
    """--threshold is the ID-check age everywhere (app and CLI); the detection score is --face-score."""
    parser = cli.build_parser()
    assert parser.parse_args(["--face-score", "0.9", "x.jpg"]).face_score == 0.9
    assert cli.main(["--model", str(tiny_model_dir), "--threshold", "0.8", str(photos[0])]) == cli.EXIT_USAGE
    assert "--face-score" in capsys.readouterr().err  # an old detection-score call is told what changed
    assert cli.main(["--model", str(tiny_model_dir), "--face-score", "0.999", "--json", str(photos[0])]) == cli.EXIT_OK
    strict = json.loads(capsys.readouterr().out)
    assert cli.main(["--model", str(tiny_model_dir), "--face-score", "0.3", "--json", str(photos[0])]) == cli.EXIT_OK
    loose = json.loads(capsys.readouterr().out)
    assert len(strict["faces"]) <= len(loose["faces"]) and all(f["score"] >= 0.999 for f in strict["faces"])


def test_cli_verdicts_follow_the_apps_rule(tiny_model_dir: Path, photos: list[Path], capsys) -> None:
    from age_model.policy import verdict

    for threshold in (16.0, 30.0):
        assert cli.main(["--model", str(tiny_model_dir), "--json", "--threshold", str(threshold), str(photos[0])]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["threshold"] == threshold and record["faces"]
        assert all(f["verdict"] == verdict(f["age"], f["spread"], threshold) for f in record["faces"])
    assert cli.main(["--model", str(tiny_model_dir), str(photos[0])]) == 0
    table = capsys.readouterr().out
    assert "ID check" in table.splitlines()[0] and ("ask for ID" in table or "no ID needed" in table)
