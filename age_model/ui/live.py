"""The Live camera mode of the Predict tab: a streaming webcam, every face boxed with `age ± spread`
and the Challenge-25 verdict drawn on each frame, as a checkout camera would show it.

Frames are never stored. Gradio keeps only the newest frame of a stream while the previous one is
being estimated (``/stream/{event_id}`` overwrites the pending frame), so a slow machine skips
frames instead of falling behind the camera.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from age_model.faces import ImageError, load_image
from age_model.policy import ASK_FOR_ID, verdict
from age_model.ui.predict_tab import _font, check_threshold, draw_faces
from age_model.ui.state import AppState

LIVE_STREAM_EVERY = 0.05  # s between frames the browser sends: up to 20/s, the server keeps the newest
LIVE_TIME_LIMIT = 600  # s a live session runs before the user starts it again (frees its worker)
# Cameras streaming at once: each holds one worker for its whole session and takes ~25 ms of CPU per frame,
# so three at 10 frames/s use about one of two cores and leave the other to photo requests.
LIVE_CAMERAS = 3
FPS_WINDOW = 10  # frames over which the shown frames/s is measured
ASK_COLOR, OK_COLOR, NO_FACE_COLOR = (200, 30, 30), (25, 135, 60), (90, 90, 90)


def new_session() -> dict[str, Any]:
    return {"frames": 0, "times": deque(maxlen=FPS_WINDOW)}


def draw_banner(image: Image.Image, text: str, color: tuple[int, int, int]) -> Image.Image:
    """A full-width bar across the top of the frame with the verdict in words."""
    draw = ImageDraw.Draw(image)
    font = _font(max(16, round(image.height / 16)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = bottom - top + 12
    draw.rectangle((0, 0, image.width, height), fill=color)
    draw.text(((image.width - (right - left)) / 2 - left, 6 - top), text, fill="white", font=font)
    return image


def live_frame(
    state: AppState, frame: np.ndarray | None, threshold: Any, session: dict[str, Any] | None
) -> tuple[Image.Image | None, str, dict[str, Any]]:
    """One camera frame in; the frame with boxes, `age ± spread` and the verdict, and a status line out."""
    session = session if isinstance(session, dict) and "times" in session else new_session()
    if frame is None:
        return None, "Waiting for the camera...", session
    start = time.perf_counter()
    predictor = state.require_predictor()
    threshold = check_threshold(threshold)
    try:
        photo = load_image(frame)
    except ImageError as error:
        return None, str(error), session
    result = predictor.predict([photo])[0]
    asks = [verdict(f.age, f.spread, threshold) == ASK_FOR_ID for f in result.faces]
    image = draw_faces(photo, result.faces, asks)
    if not result.faces:
        text, color = "No face in view", NO_FACE_COLOR
    elif any(asks):
        text, color = "ASK FOR ID", ASK_COLOR
    else:
        text, color = "No ID needed", OK_COLOR
    draw_banner(image, text, color)
    now = time.perf_counter()
    session["frames"] += 1
    session["times"].append(now)
    times = session["times"]
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    faces = ", ".join(f"{f.age:.0f} ± {f.spread:.0f}" for f in result.faces) or "none"
    status = (
        f"**{text}** (faces: {faces})  \nFrame {session['frames']}: {(now - start) * 1000:.0f} ms, "
        f"{rate:.1f} frames/s shown"
    )
    return image, status, session


def build_live_panel(state: AppState) -> None:
    """Lay out the Live camera panel inside the current Blocks context and wire its stream."""
    gr.Markdown(
        "Point the camera at the shopper: every face gets a box, its estimated age ± the uncertainty, and "
        "the verdict. Nothing is stored. Frames the server cannot keep up with are skipped."
    )
    with gr.Row():
        with gr.Column(scale=1):
            camera = gr.Image(
                sources=["webcam"], streaming=True, type="numpy", label="Camera", elem_id="live_camera", height=360
            )
            threshold = gr.Slider(
                16, 30, value=state.threshold, step=1, label="ID threshold (Challenge 25)", elem_id="live_threshold"
            )
        with gr.Column(scale=1):
            shown = gr.Image(
                label="What the checkout sees",
                show_label=False,
                elem_id="live_result",
                interactive=False,
                height=360,
                format="jpeg",
            )
            status = gr.Markdown(elem_id="live_status")
    session = gr.State(
        None
    )  # live_frame starts a session on the first frame (a callable here would be a public endpoint)

    def on_frame(frame: np.ndarray | None, threshold: float, session: dict[str, Any]):
        return live_frame(state, frame, threshold, session)

    camera.stream(
        on_frame,
        inputs=[camera, threshold, session],
        outputs=[shown, status, session],
        stream_every=LIVE_STREAM_EVERY,
        time_limit=LIVE_TIME_LIMIT,
        concurrency_limit=LIVE_CAMERAS,
        api_visibility="private",
        show_progress="hidden",
    )
