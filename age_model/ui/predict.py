"""The Predict tab: a photo in, every face boxed with `age ± spread` and a Challenge-25 verdict out."""

import io
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from age_model.faces import ImageError, load_image
from age_model.policy import ASK_FOR_ID, NO_ID_NEEDED, verdict  # noqa: F401  (re-exported for the tests)
from age_model.ui.components import SafeImage
from age_model.ui.state import AppState

logger = logging.getLogger(__name__)

TABLE_HEADERS = ["face", "age", "±", "verdict", "detection score"]
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


def draw_faces(photo: Image.Image, faces: list[Any], threshold: float) -> Image.Image:
    """The photo with a box and `34 ± 4` over every face; red where ID should be asked for."""
    image = photo.copy()
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    width = max(2, round(side / 250))
    font = ImageFont.load_default(size=max(14, round(side / 22)))  # ~16 px on screen at the page's 360 px height
    for number, face in enumerate(faces, start=1):
        color = (220, 40, 40) if verdict(face.age, face.spread, threshold) == ASK_FOR_ID else (25, 135, 60)
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


def open_photo(photo_path: str) -> Image.Image:
    """The uploaded photo, or a readable error that names the user's file, not the server's temp path."""
    try:
        return load_image(photo_path)
    except ImageError as error:
        raise gr.Error(str(error).replace(str(photo_path), Path(photo_path).name)) from None


def predict_photo(state: AppState, photo_path: str | None, threshold: float) -> tuple[Image.Image | None, str, list[list[Any]], dict]:
    """The work behind the Estimate button and the `/predict` API endpoint."""
    predictor = state.require_predictor()
    if not photo_path:
        raise gr.Error("No photo yet: upload one, paste one, or take one with the webcam.")
    photo = open_photo(photo_path)
    result = predictor.predict([photo])[0]
    if result.error:
        raise gr.Error(result.error)
    rows = [[i, round(f.age, 1), round(f.spread, 1), verdict(f.age, f.spread, threshold), round(f.score, 2)]
            for i, f in enumerate(result.faces, start=1)]
    summary = _summary(result, threshold)
    payload = {"faces": [{"face": i, "box": [round(v, 1) for v in f.box], "age": round(f.age, 2), "spread": round(f.spread, 2),
                          "score": round(f.score, 3), "verdict": verdict(f.age, f.spread, threshold)}
                         for i, f in enumerate(result.faces, start=1)],
               "threshold": threshold, "seconds": round(result.seconds, 3), "message": result.message}
    return draw_faces(photo, result.faces, threshold), summary, rows, payload


def _summary(result: Any, threshold: float) -> str:
    if not result.faces:
        return f"**{result.message}**"
    asks = sum(verdict(f.age, f.spread, threshold) == ASK_FOR_ID for f in result.faces)
    faces = "1 face" if len(result.faces) == 1 else f"{len(result.faces)} faces"
    head = "### Ask for ID" if asks else "### No ID needed"
    detail = f"{faces}; {asks} under the Challenge-{threshold:g} line or too close to call." if asks else f"{faces}; every estimate is clearly {threshold:g} or over."
    return f"{head}\n{detail} Took {result.seconds * 1000:.0f} ms."


def lossless_bytes(crop: Image.Image) -> bytes:
    """The face crop as PNG: the exact pixels the model scored (a JPEG re-encode moved an uncertain
    estimate by 6 years). load_image already dropped EXIF and every other metadata from the photo."""
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def report_age(state: AppState, photo_path: str | None, face_number: float | None, real_age: float | None,
               consent: bool, note: str, source: str | None, request: gr.Request | None = None) -> str:
    """"This is wrong, the real age is N": the face crop and the age go into the feedback store."""
    predictor = state.require_predictor()
    store = state.require_store()
    if not photo_path:
        raise gr.Error("Estimate a photo first, then say which face is wrong.")
    if real_age is None:
        raise gr.Error("Enter the real age in years.")
    if not consent:
        raise gr.Error("Tick the consent box: without it nothing is stored.")
    photo = open_photo(photo_path)
    faces, crops = predictor.find_faces(photo)
    number = int(face_number or 1)
    if not 1 <= number <= len(faces):
        raise gr.Error(f"There is no face {number} in this photo: it has {len(faces)}.")
    ages, _ = predictor.predict_crops([crops[number - 1]])
    user = getattr(request, "username", None) or "stakeholder"
    try:
        vote = store.add_upload(
            lossless_bytes(crops[number - 1]), real_age, user, consent=True, source=source or "upload",
            model_age=float(ages[0]), model_version=state.model_version, note=(note or None),
            original_name=Path(photo_path).name, strip=False,
        )
    except ValueError as error:  # the store's validation errors say what was wrong
        raise gr.Error(str(error)) from None
    logger.info("correction stored for sample %s by %s", vote.sample_id[:12], user)
    return f"Thank you: stored as sample `{vote.sample_id[:12]}` (real age {float(real_age):g}, the model said {ages[0]:.0f})."


def build_predict_tab(state: AppState, examples: list[str]) -> None:
    """Lay out the Predict tab inside the current Blocks context and wire its events."""
    gr.Markdown(state.model_banner(), elem_id="model_banner")
    source = gr.State("upload")  # "webcam" after a capture: stored with a correction
    source_hint = gr.Textbox(visible=False)  # carries PHOTO_SOURCE_JS's answer to the server
    with gr.Row():
        with gr.Column(scale=1):
            photo = SafeImage(
                sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo", elem_id="photo",
                webcam_options=gr.WebcamOptions(mirror=False), height=360,
            )
            threshold = gr.Slider(16, 30, value=state.threshold, step=1, label="ID threshold (Challenge 25: ask anyone who looks under 25)", elem_id="threshold")
            estimate = gr.Button("Estimate age", variant="primary", elem_id="estimate")
            example_set = gr.Examples(examples=examples, inputs=photo, label="Example photos") if examples else None
        with gr.Column(scale=1):
            annotated = gr.Image(label="Result", elem_id="annotated", interactive=False, height=360, format="jpeg")
            summary = gr.Markdown(elem_id="verdict")
            table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["number", "number", "number", "str", "number"],
                                 label="Faces", interactive=False, elem_id="faces_table")
            with gr.Accordion("Result as JSON (what the API returns)", open=False):
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

    def on_report(photo: str | None, face_number: float | None, real_age: float | None, consent: bool, note: str,
                  photo_source: str | None, request: gr.Request):
        return report_age(state, photo, face_number, real_age, consent, note, photo_source, request)

    photo.upload(lambda hint: hint if hint in ("upload", "webcam") else "upload", inputs=source_hint, outputs=source,
                 js=PHOTO_SOURCE_JS, api_visibility="private")
    if example_set is not None:
        example_set.dataset.click(lambda: "upload", outputs=source, api_visibility="private")
    estimate.click(on_predict, inputs=[photo, threshold], outputs=[annotated, summary, table, raw], api_name="predict")
    send.click(on_report, inputs=[photo, face_number, real_age, consent, note, source], outputs=thanks, api_name="report_age")
