"""The Predict tab: a photo in, every face boxed with `age ± spread` and a Challenge-25 verdict out."""

import functools
import hashlib
import hmac
import io
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from age_model.ages import AGE_RANGE
from age_model.faces import ImageError, load_image
from age_model.feedback import PUBLIC_PREFIX
from age_model.policy import ASK_FOR_ID, THRESHOLD_RANGE, verdict
from age_model.predictor import FaceEstimate, PhotoResult
from age_model.ui.components import SafeImage
from age_model.ui.errors import user_error
from age_model.ui.state import AppState

logger = logging.getLogger(__name__)

TABLE_HEADERS = ["Face", "Estimated age", "Give or take (years)", "What to do"]
# Photos estimated at once: one per core. Batching concurrent requests into one model call was measured
# to gain nothing on CPU (ONNX Runtime, per image: 5.4 ms at batch 2, 5.8 at 8, 6.2 at 16), while two requests
# in flight let one detect while the other runs the model. More would only queue inside the process.
PREDICT_CONCURRENCY = 2
# A webcam capture reaches the server as an ordinary `upload` event (like a file or a paste), so the
# browser tells which source button is active when it fires.
PHOTO_SOURCE_JS = """() => {
  const active = document.querySelector('#photo [data-testid=source-select] button.selected');
  return active && active.getAttribute('aria-label') === 'Capture from camera' ? 'webcam' : 'upload';
}"""
CONSENT_TEXT = (
    "I am the person in this photo, or I have their permission, and I agree that the face crop and the age "
    "I give may be stored to improve the model."
)


def draw_faces(photo: Image.Image, faces: Sequence[FaceEstimate], asks: Sequence[bool]) -> Image.Image:
    """The photo with a box and `34 ± 4` over every face; red where ID should be asked for (``asks``, per face)."""
    image = photo.copy()
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 250))
    font = _font(max(14, round(side / 22)))  # ~16 px on screen at the page's 360 px height
    for number, (face, ask) in enumerate(zip(faces, asks), start=1):
        color = (220, 40, 40) if ask else (25, 135, 60)
        x0, y0, x1, y1 = face.box
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        label = f"{number}: {face.age:.0f} ± {face.spread:.0f}"
        left, top_offset, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = width + 1
        label_w, label_h = right - left + 2 * pad, bottom - top_offset + 2 * pad
        # Above the box if it fits, else below it, else inside its top edge; never past the photo's sides.
        top = y0 - label_h if y0 - label_h >= 0 else y1 if y1 + label_h <= image.height else max(0, y0)
        x = min(max(0, x0), max(0, image.width - label_w))
        draw.rectangle((x, top, x + label_w, top + label_h), fill=color)
        draw.text((x + pad - left, top + pad - top_offset), label, fill="white", font=font)
    return image


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at one size, loaded once (it took a few ms per request)."""
    return ImageFont.load_default(size=size)


def open_photo(photo_path: str) -> Image.Image:
    """The uploaded photo, or a readable error that names the user's file, not the server's temp path."""
    try:
        return load_image(photo_path)
    except ImageError as error:
        raise user_error(str(error).replace(str(photo_path), Path(photo_path).name)) from None


# --------------------------------------------------------------------------- strict API inputs
# Every value below arrives from a stranger as JSON. Each check says in one sentence what to send.


def finite_number(value: Any, what: str, low: float, high: float) -> float:
    """A JSON number (not a string, not a boolean, not NaN/Infinity) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise user_error(f"{what} must be a number between {low:g} and {high:g}, got {type(value).__name__}.")
    if not math.isfinite(value) or not low <= value <= high:
        raise user_error(f"{what} must be a number between {low:g} and {high:g}, got {value!r}.")
    return float(value)


def check_threshold(value: Any) -> float:
    return finite_number(value, "The ID threshold", *THRESHOLD_RANGE)


def check_consent(value: Any) -> bool:
    """Consent is a JSON boolean: the strings "false" or "no" are not consent, nor refusals."""
    if not isinstance(value, bool):
        raise user_error(f"Consent must be true or false (a JSON boolean), got {type(value).__name__}.")
    return value


def check_face_number(value: Any) -> int:
    number = finite_number(1 if value is None else value, "The face number", 1, 1000)
    if number != int(number):
        raise user_error(f"The face number must be a whole number, got {value!r}.")
    return int(number)


def submitter_pseudonym(request: gr.Request | None, key: bytes) -> str:
    """``public:<12 hex>``: one stable pseudonym per browser (address and user agent) under this
    server's key; the address itself is never stored. Never a team member's name (those have no ':')."""
    if request is None:
        return PUBLIC_PREFIX + "unknown"
    address = getattr(getattr(request, "client", None), "host", None) or "unknown"
    agent = (getattr(request, "headers", None) or {}).get("user-agent", "")
    digest = hmac.new(key, f"{address}|{agent}".encode(), hashlib.sha256).hexdigest()[:12]
    return PUBLIC_PREFIX + digest


RESULTS_KEEP_SECONDS = 600


def result_file(image: Image.Image, folder: Path | None) -> str | Image.Image:
    """The boxed photo as a JPEG file of its own (a unique name per request, written atomically).

    Gradio names cached outputs by their content, so identical concurrent requests rewrote one
    file while others were reading it; a unique file per request cannot be half-written.
    """
    if folder is None:
        return image
    results = folder / "agecheck-results"
    results.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in results.iterdir():  # the folder is the server's own: keep it small
        try:
            if now - old.stat().st_mtime > RESULTS_KEEP_SECONDS:
                old.unlink()
        except OSError:
            pass
    name = uuid.uuid4().hex
    partial, final = results / f".{name}.part", results / f"{name}.jpg"
    image.save(partial, format="JPEG", quality=90)
    os.replace(partial, final)
    return str(final)


def predict_photo(
    state: AppState, photo_path: str | None, threshold: float
) -> tuple[Image.Image | str | None, str, list[list[Any]], dict]:
    """The work behind the Estimate button and the `/predict` API endpoint."""
    predictor = state.require_predictor()
    threshold = check_threshold(threshold)
    if not photo_path:
        raise user_error("No photo yet: upload one, paste one, or take one with the webcam.")
    photo = open_photo(photo_path)
    result = predictor.predict([photo])[0]
    if result.error:
        raise user_error(result.error)
    verdicts = [verdict(f.age, f.spread, threshold) for f in result.faces]  # the rule runs once per face
    rows = [
        [i, round(f.age, 1), round(f.spread, 1), said]
        for i, (f, said) in enumerate(zip(result.faces, verdicts), start=1)
    ]  # detection scores: in "Details"
    summary = _summary(result, verdicts, threshold)
    payload = {
        "faces": [
            {
                "face": i,
                "box": [round(v, 1) for v in f.box],
                "age": round(f.age, 2),
                "spread": round(f.spread, 2),
                "score": round(f.score, 3),
                "verdict": said,
            }
            for i, (f, said) in enumerate(zip(result.faces, verdicts), start=1)
        ],
        "threshold": threshold,
        "seconds": round(result.seconds, 3),
        "message": result.message,
    }
    image = draw_faces(photo, result.faces, [said == ASK_FOR_ID for said in verdicts])
    return result_file(image, state.upload_folder), summary, rows, payload


def _summary(result: PhotoResult, verdicts: Sequence[str], threshold: float) -> str:
    """The verdict in words a cashier acts on, as a coloured heading (VERDICT_CSS), then one plain sentence."""
    if not result.faces:
        return f"**{result.message}**"
    asks = sum(said == ASK_FOR_ID for said in verdicts)
    count = len(result.faces)
    if asks:
        head = '<h3 class="verdict-ask">Ask for ID</h3>'
        who = "The face" if count == 1 else f"{asks} of the {count} faces"
        detail = f"{who} may be under {threshold:g} (the estimate minus its ± is below {threshold:g}): ask to see ID."
    else:
        head = '<h3 class="verdict-ok">No ID needed</h3>'
        detail = f"{'The face looks' if count == 1 else f'All {count} faces look'} clearly {threshold:g} or older."
    return f"{head}\n\n{detail} (estimated in {result.seconds * 1000:.0f} ms)"


VERDICT_CSS = """
#verdict h3.verdict-ask, #verdict h3.verdict-ok {
  color: white; padding: 0.4em 0.8em; border-radius: 6px; margin: 0.2em 0;
}
#verdict h3.verdict-ask { background: #c62828; }
#verdict h3.verdict-ok { background: #2e7d32; }
"""


def lossless_bytes(crop: Image.Image) -> bytes:
    """The face crop as PNG: the exact pixels the model scored (a JPEG re-encode moved an uncertain
    estimate by 6 years). load_image already dropped EXIF and every other metadata from the photo."""
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def report_age(
    state: AppState,
    photo_path: str | None,
    face_number: Any,
    real_age: Any,
    consent: Any,
    note: Any,
    source: str | None,
    request: gr.Request | None = None,
) -> str:
    """ "This is wrong, the real age is N": the face crop and the age go into the feedback store.

    A stranger's report is stored **unverified**, signed with a pseudonym: it never overrides a
    label and never trains a model until an annotator confirms or corrects it (Submissions queue).
    """
    predictor = state.require_predictor()
    store = state.require_store()
    if not photo_path:
        raise user_error("Estimate a photo first, then say which face is wrong.")
    if real_age is None:
        raise user_error("Enter the real age in years.")
    real_age = finite_number(real_age, "The real age", *AGE_RANGE)
    number = check_face_number(face_number)
    if not check_consent(consent):
        raise user_error("Tick the consent box: without it nothing is stored.")
    if note is not None and not isinstance(note, str):
        raise user_error("The note must be text.")
    if note and len(note) > 500:
        raise user_error("The note is too long: at most 500 characters.")
    photo = open_photo(photo_path)
    faces, crops = predictor.find_faces(photo)
    if not 1 <= number <= len(faces):
        raise user_error(f"There is no face {number} in this photo: it has {len(faces)}.")
    ages, _ = predictor.predict_crops([crops[number - 1]])
    user = getattr(request, "username", None) or submitter_pseudonym(request, state.pseudonym_key)
    try:
        vote = store.add_upload(
            lossless_bytes(crops[number - 1]),
            real_age,
            user,
            consent=True,
            source=source if source in ("upload", "webcam") else "upload",
            model_age=float(ages[0]),
            model_version=state.model_version,
            note=(note or None),
            original_name=Path(photo_path).name,
            strip=False,
        )
    except ValueError as error:  # the store's validation errors say what was wrong
        raise user_error(str(error)) from None
    logger.info("unverified report stored for sample %s by %s", vote.sample_id[:12], user)
    return (
        f"Thank you: stored as sample `{vote.sample_id[:12]}` (real age {real_age:g}, the model said {ages[0]:.0f}). "
        "An annotator will check it before it is used."
    )


def build_predict_tab(state: AppState, examples: list[str]) -> None:
    """Lay out the Predict tab inside the current Blocks context and wire its events."""
    from age_model.ui.live import build_live_panel  # live.py draws with this module's helpers

    gr.Markdown(state.model_banner(), elem_id="model_banner")
    with gr.Tab("Photo", elem_id="photo_mode"):
        _build_photo_panel(state, examples)
    with gr.Tab("Live camera", elem_id="live_mode"):
        build_live_panel(state)


def _build_photo_panel(state: AppState, examples: list[str]) -> None:
    source = gr.State("upload")  # "webcam" after a capture: stored with a correction
    source_hint = gr.Textbox(visible=False)  # carries PHOTO_SOURCE_JS's answer to the server
    with gr.Row():
        with gr.Column(scale=1) as photo_column:
            photo = SafeImage(
                sources=["upload", "webcam", "clipboard"],
                type="filepath",
                label="Photo",
                elem_id="photo",
                # The upload as sent: Gradio re-encoded every non-RGB photo as PNG (17 % of the server CPU).
                image_mode=None,
                webcam_options=gr.WebcamOptions(mirror=False),
                height=360,
            )
            threshold = gr.Slider(
                16,
                30,
                value=state.threshold,
                step=1,
                label="ID threshold (Challenge 25: ask anyone who looks under 25)",
                elem_id="threshold",
            )
            estimate = gr.Button("Estimate age", variant="primary", elem_id="estimate")
        with gr.Column(scale=1):
            annotated = gr.Image(label="Result", elem_id="annotated", interactive=False, height=360, format="jpeg")
            summary = gr.Markdown(elem_id="verdict")
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["number", "number", "number", "str"],
                label="Faces",
                interactive=False,
                elem_id="faces_table",
            )
            with gr.Accordion(
                "Details: detection scores and the full result (what the API returns)", open=False, elem_id="details"
            ):
                raw = gr.JSON(elem_id="raw_json")
    with gr.Accordion("Is an estimate wrong? Tell us the real age", open=False, elem_id="correction_panel"):
        with gr.Row():
            face_number = gr.Number(value=1, precision=0, minimum=1, label="Face number", elem_id="face_number")
            real_age = gr.Number(label="Real age (years)", minimum=0, maximum=120, elem_id="real_age")
            note = gr.Textbox(label="Note (optional)", elem_id="note")
        consent = gr.Checkbox(label=CONSENT_TEXT, elem_id="consent")
        send = gr.Button("Send correction", elem_id="send_correction")
        thanks = gr.Markdown(elem_id="correction_status")

    # Parameter names below are the API's parameter names (gradio_client, /gradio_api/info).
    def on_predict(photo: str | None, threshold: float):
        return predict_photo(state, photo, threshold)

    with photo_column:
        # A click on an example shows its result at once: computed on first use, then served from
        # Gradio's example cache (GRADIO_EXAMPLES_CACHE, inside this server's private folder).
        # Shown at the default threshold, and the slider is put back to it so the two always agree.
        example_set = (
            gr.Examples(
                examples=examples,
                inputs=photo,
                outputs=[annotated, summary, table, raw, threshold],
                fn=lambda photo: (*predict_photo(state, photo, state.threshold), state.threshold),
                cache_examples=True,
                cache_mode="lazy",
                run_on_click=True,
                label="Example photos: click one to see the result",
            )
            if examples and state.predictor is not None
            else None
        )

    def on_report(
        photo: str | None,
        face_number: float | None,
        real_age: float | None,
        consent: bool,
        note: str,
        photo_source: str | None,
        request: gr.Request,
    ):
        return report_age(state, photo, face_number, real_age, consent, note, photo_source, request)

    photo.upload(
        lambda hint: hint if hint in ("upload", "webcam") else "upload",
        inputs=source_hint,
        outputs=source,
        js=PHOTO_SOURCE_JS,
        api_visibility="private",
    )
    if example_set is not None:
        example_set.dataset.click(lambda: "upload", outputs=source, api_visibility="private")
    estimate.click(
        on_predict,
        inputs=[photo, threshold],
        outputs=[annotated, summary, table, raw],
        api_name="predict",
        concurrency_limit=PREDICT_CONCURRENCY,
    )
    send.click(
        on_report, inputs=[photo, face_number, real_age, consent, note, source], outputs=thanks, api_name="report_age"
    )
