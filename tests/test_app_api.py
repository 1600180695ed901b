"""The app through its HTTP API, as a script or another service would use it (gradio_client)."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

from age_model.policy import ASK_FOR_ID, NO_ID_NEEDED
from age_model.ui.state import HOW_TO_GET_A_MODEL
from tests.app_support import CAT_PHOTO, EXAMPLE_PHOTO, REPO_ROOT, serve_app
from tests.conftest import FIXTURE

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

FIXTURE_PHOTOS = sorted(p.name for p in (FIXTURE / "images").glob("*")) if (FIXTURE / "images").is_dir() else []
MAX_FILE_SIZE = "1mb"


@pytest.fixture(scope="module")
def app_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("app_api") / "fb.db"
    with serve_app(tiny_model_dir, f"sqlite:///{store}", max_file_size=MAX_FILE_SIZE) as url:
        yield url, f"sqlite:///{store}"


@pytest.fixture(scope="module")
def client(app_url):
    client = Client(app_url[0], analytics_enabled=False, verbose=False)
    yield client
    client.close()  # ends its heartbeat stream, so the server can stop at once


def predict(client: Client, photo: Path, threshold: float = 25.0):
    return client.predict(handle_file(str(photo)), threshold, api_name="/predict")


def expected_verdict(face: dict, threshold: float) -> str:
    return ASK_FOR_ID if face["age"] - face["spread"] < threshold else NO_ID_NEEDED


def check_result(result, photo: Path, threshold: float) -> dict:
    """Annotated image, summary, table and JSON agree with each other and with the threshold."""
    annotated, summary, table, payload = result
    faces = payload["faces"]
    with Image.open(photo) as original, Image.open(annotated) as drawn:
        size = original.size
        assert drawn.size == size
    assert len(table["data"]) == len(faces)
    for face, row in zip(faces, table["data"]):
        assert math.isfinite(face["age"]) and 0 <= face["age"] <= 120
        assert math.isfinite(face["spread"]) and face["spread"] > 0
        assert face["verdict"] == expected_verdict(face, threshold) == row[3]
        assert row[1] == pytest.approx(face["age"], abs=0.051)
    if faces:
        asks = any(f["verdict"] == ASK_FOR_ID for f in faces)
        assert summary.startswith(
            '<h3 class="verdict-ask">Ask for ID</h3>' if asks else '<h3 class="verdict-ok">No ID needed</h3>'
        )
    assert payload["threshold"] == threshold
    return payload


def assert_readable(error: pytest.ExceptionInfo, *words: str) -> str:
    """An AppError that says what was wrong, without leaking server paths."""
    message = str(error.value)
    for word in words:
        assert word.lower() in message.lower(), message
    assert "/tmp" not in message and "gradio" not in message.lower() and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------- predict


@pytest.mark.parametrize("name", FIXTURE_PHOTOS or ["(no fixture photos)"])
def test_predict_each_fixture_photo(client, fixture_dir, name):
    photo = fixture_dir / "images" / name
    payload = check_result(predict(client, photo), photo, 25.0)
    width, height = Image.open(photo).size
    if name.startswith("fgnet_"):  # uncropped photos: the face is found and boxed inside the image
        assert len(payload["faces"]) >= 1
        for face in payload["faces"]:
            x0, y0, x1, y1 = face["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, face["box"]
    else:  # 200 px chips: a face box may reach a little past the border (documented in faces.Face)
        for face in payload["faces"]:
            x0, y0, x1, y1 = face["box"]
            assert -0.1 * width <= x0 < x1 <= 1.1 * width and -0.1 * height <= y0 < y1 <= 1.1 * height


@pytest.mark.parametrize("threshold", [16.0, 30.0])
def test_verdict_follows_threshold(client, threshold):
    check_result(predict(client, EXAMPLE_PHOTO, threshold), EXAMPLE_PHOTO, threshold)


def test_photo_without_face_is_a_message(client):
    annotated, summary, table, payload = predict(client, CAT_PHOTO)
    assert payload["faces"] == [] and table["data"] == []
    assert payload["message"] and payload["message"] in summary
    assert Path(annotated).is_file()


def test_non_image_is_refused_readably(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n" * 20)
    with pytest.raises(AppError) as error:
        predict(client, text)
    assert_readable(error, "could not be opened as an image", "JPEG")
    renamed = tmp_path / "holiday.jpg"  # the extension lies
    renamed.write_bytes(text.read_bytes())
    with pytest.raises(AppError) as error:
        predict(client, renamed)
    assert_readable(error, "could not be opened as an image")


def test_truncated_photo_names_the_file_not_the_server_path(client, tmp_path):
    broken = tmp_path / "cut-off.jpg"
    broken.write_bytes(EXAMPLE_PHOTO.read_bytes()[:3000])
    with pytest.raises(AppError) as error:
        predict(client, broken)
    assert_readable(error, "cut-off.jpg", "truncated")


def _bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit PNG of side x side px in ~50 KB (one colour), written without decoding it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * (side // 8)  # filter byte + 1-bit white pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_readably(client, tmp_path):
    bomb = _bomb_png(tmp_path / "huge.png")
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(AppError) as error:
        predict(client, bomb)
    assert_readable(error, "too large", "MP")


def test_file_over_max_file_size_is_refused(client, app_url, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(EXAMPLE_PHOTO.read_bytes() + b"\0" * 1_100_000)  # still a valid JPEG, just padded
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks before uploading
        predict(client, big)
    with big.open("rb") as file:  # and the server refuses it from anyone else
        response = httpx.post(app_url[0] + "/gradio_api/upload", files={"files": file}, timeout=30)
    assert response.status_code == 413


# --------------------------------------------------------------------------- corrections


def report(client: Client, photo: Path, real_age, consent: bool, face_number: int = 1, note: str = ""):
    return client.predict(handle_file(str(photo)), face_number, real_age, consent, note, api_name="/report_age")


def test_report_age_stores_a_consented_correction(client, app_url, tiny_model_dir):
    from age_model.feedback import FeedbackStore
    from age_model.predictor import AgePredictor

    message = report(client, EXAMPLE_PHOTO, 42, True, note="api test")
    assert message.startswith("Thank you") and "42" in message
    with FeedbackStore(app_url[1]) as store:
        votes = [v for v in store.votes() if v.note == "api test"]
        assert len(votes) == 1
        vote = votes[0]
        assert (vote.source, vote.consent, vote.age, vote.kind) == ("upload", True, 42.0, "vote")
        assert vote.model_age is not None and math.isfinite(vote.model_age)
        assert vote.model_version and store.image_file(vote.sample_id).is_file()
        stored = Image.open(store.image_file(vote.sample_id))
        assert stored.format == "PNG" and not stored.info.get("exif")
    # the stored crop is exactly what the model scored: annotators and retraining see the same pixels
    ages, _ = AgePredictor(tiny_model_dir).predict_crops([stored.convert("RGB")])
    assert ages[0] == pytest.approx(vote.model_age, abs=1e-3)


@pytest.mark.parametrize(
    ("real_age", "consent", "words"),
    [
        (30, False, "consent"),
        (None, True, "real age"),
    ],
)
def test_report_age_refuses_without_consent_or_age(client, app_url, real_age, consent, words):
    from age_model.feedback import FeedbackStore

    with FeedbackStore(app_url[1]) as store:
        before = len(store.votes())
    with pytest.raises(AppError) as error:
        report(client, EXAMPLE_PHOTO, real_age, consent, note="refused")
    assert_readable(error, words)
    with FeedbackStore(app_url[1]) as store:
        assert len(store.votes()) == before


def test_report_age_refuses_a_face_that_is_not_there(client):
    with pytest.raises(AppError) as error:
        report(client, EXAMPLE_PHOTO, 30, True, face_number=3)
    assert_readable(error, "no face 3", "it has 1")


# --------------------------------------------------------------------------- health, start-up, CLI


def test_healthz(app_url):
    response = httpx.get(app_url[0] + "/healthz", timeout=10)
    health = response.json()
    assert response.status_code == 200
    assert health["status"] == "ok" and health["model_loaded"] is True and health["model_error"] is None
    assert health["store"] == "sqlite" and health["store_reachable"] is True and health["store_error"] is None
    assert app_url[1] not in response.text  # the store's URL (and so any password in it) is never shown


def test_without_a_model_the_app_starts_and_explains(tmp_path):
    with serve_app(tmp_path / "no-such-model", f"sqlite:///{tmp_path}/fb.db") as url:
        response = httpx.get(url + "/healthz", timeout=10)
        health = response.json()
        assert response.status_code == 503
        assert health["status"] == "degraded" and health["model_loaded"] is False and health["model_error"]
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200
        assert "No age model loaded" in page.text and "train.py" in page.text
        client = Client(url, analytics_enabled=False, verbose=False)
        try:
            with pytest.raises(AppError) as error:
                predict(client, EXAMPLE_PHOTO)
        finally:
            client.close()
        assert HOW_TO_GET_A_MODEL in str(error.value)


def test_cli_help_lists_the_server_options():
    result = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--annotators", "--queue-size", "--model", "--store", "--max-file-size"):
        assert option in result.stdout


def test_only_the_documented_endpoints_are_public(app_url):
    """The Live camera stream, the examples' cache and the session state add no public endpoint."""
    import httpx

    info = httpx.get(app_url[0] + "/gradio_api/info", timeout=30).json()
    assert sorted(info["named_endpoints"]) == ["/age_groups", "/predict", "/report_age"]
    assert not info["unnamed_endpoints"]
