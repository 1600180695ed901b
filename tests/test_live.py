"""The Live camera mode's per-frame work (age_model.ui.live) without a browser: tiny model, fixture photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from age_model.predictor import AgePredictor
from age_model.ui.live import ASK_COLOR, NO_FACE_COLOR, OK_COLOR, live_frame, new_session
from age_model.ui.state import AppState


@pytest.fixture(scope="module")
def state(tiny_model_dir: Path) -> AppState:
    return AppState(model=str(tiny_model_dir), store_url="", predictor=AgePredictor(tiny_model_dir))


def camera_frame(photo: Path) -> np.ndarray:
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    face = Image.open(photo).convert("RGB")
    face.thumbnail((640, 480))
    canvas.paste(face, (0, 0))
    return np.asarray(canvas)


def test_each_frame_is_drawn_with_the_verdict_and_counted(state: AppState, fixture_dir: Path) -> None:
    frame = camera_frame(fixture_dir / "images" / "fgnet_082A18.JPG")
    session = new_session()
    for number in (1, 2, 3):
        image, status, session = live_frame(state, frame, 25, session)
        assert image.size == (640, 480) and f"Frame {number}:" in status
    banner = image.getpixel((5, 5))
    assert banner in (ASK_COLOR, OK_COLOR)  # one face: a red or green bar across the top
    assert ("ASK FOR ID" in status) == (banner == ASK_COLOR) and "±" in status
    assert "frames/s" in status


def test_no_face_and_no_frame(state: AppState) -> None:
    image, status, _ = live_frame(state, np.full((480, 640, 3), 90, np.uint8), 25, None)
    assert image.getpixel((5, 5)) == NO_FACE_COLOR and "No face" in status
    assert live_frame(state, None, 25, None)[:2] == (None, "Waiting for the camera...")


def test_a_bad_threshold_is_refused(state: AppState) -> None:
    from gradio.exceptions import Error

    with pytest.raises(Error, match="threshold"):
        live_frame(state, np.zeros((480, 640, 3), np.uint8), "25", None)
