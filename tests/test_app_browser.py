"""The Predict page in a real browser (Debian's Chromium through Playwright): upload, webcam, errors.

Screenshots of every step land in tests/_artifacts/ (gitignored: they show research-only faces).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from age_model.faces import detect_faces, load_image
from tests.app_support import (
    ARTIFACTS,
    CHROMIUM,
    capture_webcam,
    chromium_session,
    serve_app,
    start_live_camera,
    upload_and_estimate,
    write_y4m,
)

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

PHOTO = "fgnet_082A18.JPG"  # an uncropped photo with one face
TIMEOUT = 30_000  # ms; the machine is shared, but every wait is for an element, never for the network
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    store = f"sqlite:///{tmp_path_factory.mktemp('app_browser')}/fb.db"
    with serve_app(tiny_model_dir, store) as url:
        yield url, store


@pytest.fixture(scope="module")
def photo(fixture_dir: Path) -> Path:
    return fixture_dir / "images" / PHOTO


@pytest.fixture(scope="module")
def browser(photo: Path, tmp_path_factory: pytest.TempPathFactory):
    """One Chromium for the module, its camera a fake one that shows `photo` on the left of a 640x480 frame."""
    work = tmp_path_factory.mktemp("chromium")
    y4m = write_y4m(photo, work / "camera.y4m", align="left", frames=10, drift=6)  # the face stays in the left half
    with chromium_session(work, TIMEOUT, {"width": 1280, "height": 900}, y4m) as context:
        yield context


@pytest.fixture
def page(browser, app, request):
    page = browser.new_page()
    page.goto(app[0] + "/")
    expect(page.locator("#estimate")).to_be_visible()
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    page.close()


def read_result(page) -> tuple[str, list[list[str]]]:
    """The verdict heading and the faces table, as a person reads them."""
    heading = page.locator("#verdict h3").inner_text()
    expect(page.locator("#faces_table [data-testid=cell-0-3]")).to_have_text(re.compile("ask for ID|no ID needed"))
    rows = page.locator(
        "#faces_table [role=row]:has([role=gridcell])"
    ).all()  # the grid's rows, not its hidden sizing table
    table = [[cell.strip() for cell in row.locator("[role=gridcell]").all_inner_texts()] for row in rows]
    return heading, table


def check_result(page) -> list[list[str]]:
    heading, table = read_result(page)
    assert heading in ("Ask for ID", "No ID needed")
    assert table and all(re.fullmatch(r"\d+(\.\d+)?", row[1]) for row in table), table  # ages shown
    assert table[0][3] in ("ask for ID", "no ID needed")
    expect(page.locator("#annotated img")).to_be_visible()
    return table


def send_correction(page, age: int, note: str) -> None:
    page.get_by_text("Is an estimate wrong? Tell us the real age").click()
    page.locator("#real_age input[type=number]").fill(str(age))
    page.locator("#note textarea").fill(note)
    page.locator("#consent input[type=checkbox]").check()
    page.locator("#send_correction").click()
    expect(page.locator("#correction_status")).to_contain_text("Thank you")


def stored_vote(store_url: str, note: str):
    from age_model.feedback import FeedbackStore

    with FeedbackStore(store_url) as store:
        votes = [v for v in store.votes() if v.note == note]
    assert len(votes) == 1, votes
    return votes[0]


def test_upload_estimate_and_correct(page, app, photo):
    upload_and_estimate(page, photo, TIMEOUT)
    check_result(page)
    send_correction(page, 18, "browser upload")
    vote = stored_vote(app[1], "browser upload")
    assert (vote.source, vote.consent, vote.age) == ("upload", True, 18.0)


def test_webcam_capture_estimate_and_correct(page, app):
    capture_webcam(page, TIMEOUT)
    page.locator("#estimate").click()
    expect(page.locator("#verdict h3")).to_be_visible()
    check_result(page)
    # The server got the camera's frame unmirrored: the photo sits on the left of the fake camera's
    # 640x480 frame, so its face must be found in the left half of the captured picture.
    captured = page.locator("#photo img[src*='gradio_api/file=']").get_attribute("src")
    frame = load_image(httpx.get(urljoin(app[0] + "/", captured), timeout=10).content)
    assert frame.size == (640, 480)
    faces = detect_faces(frame)
    assert len(faces) == 1 and (faces[0].box[0] + faces[0].box[2]) / 2 < 320, faces
    send_correction(page, 61, "browser webcam")
    vote = stored_vote(app[1], "browser webcam")
    assert (vote.source, vote.consent, vote.age) == ("webcam", True, 61.0)
    # An example photo picked after a capture is no webcam photo.
    page.locator("img[src*='astronaut-eileen-collins']").first.click()
    expect(page.locator("#photo img[src*='astronaut-eileen-collins']")).to_be_visible()
    page.locator("#note textarea").fill("browser example")
    page.locator("#send_correction").click()  # same age, consent still ticked
    status = page.locator("#correction_status")
    expect(status).not_to_contain_text(vote.sample_id[:12])  # the new message has replaced the old one
    expect(status).to_contain_text("Thank you")
    assert stored_vote(app[1], "browser example").source == "upload"


def test_non_image_upload_shows_a_readable_error(page, tmp_path):
    toasts = page.locator("[data-testid=toast-body]")
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    page.locator("#photo input[type=file]").set_input_files(str(text))  # the page itself refuses it by type
    expect(toasts.filter(has_text="Invalid file type: notes.txt")).to_be_visible()
    disguised = tmp_path / "holiday.jpg"  # passes the page's check; the server must refuse it readably
    disguised.write_text("not a photo either\n")
    page.locator("#photo input[type=file]").set_input_files(str(disguised))
    page.locator("#photo img[src*='gradio_api/file=']").wait_for(state="attached")
    page.locator("#estimate").click()
    error = toasts.filter(has_text="could not be opened as an image")
    expect(error).to_be_visible()
    assert "/tmp" not in error.inner_text() and "gradio" not in error.inner_text().lower()


def live_status(page) -> tuple[int, str]:
    """The Live mode's status line: the frame number the server has drawn, and the whole text."""
    text = page.locator("#live_status").inner_text()
    found = re.search(r"Frame (\d+):", text)
    return (int(found.group(1)) if found else 0), text


def test_live_camera_draws_updated_results_frame_after_frame(page):
    start_live_camera(page, TIMEOUT)
    expect(page.locator("#live_status")).to_contain_text("Frame", timeout=TIMEOUT)
    seen_frames, seen_images = [], set()
    for _ in range(30):  # several frames, each drawn by the server
        number, text = live_status(page)
        if not seen_frames or number > seen_frames[-1]:
            seen_frames.append(number)
            seen_images.add(page.locator("#live_result img").get_attribute("src"))
            assert re.search(r"ASK FOR ID|No ID needed", text) and re.search(r"\d+ ± \d+", text), (
                text
            )  # one face, verdict
        if len(seen_frames) >= 4:
            break
        page.wait_for_timeout(250)
    assert len(seen_frames) >= 4, seen_frames
    assert len(seen_images) >= 3  # a new drawn frame each time, not one picture
    drawn = page.locator("#live_result img")
    assert drawn.evaluate("img => img.naturalWidth") == 640  # the camera's own frame size, boxed and labelled


def test_an_example_shows_its_result_on_click(page):
    page.locator("img[src*='astronaut-eileen-collins']").first.click()  # no Estimate press
    check_result(page)
    verdict = page.locator("#verdict h3")
    colour = verdict.evaluate("h => getComputedStyle(h).backgroundColor")
    assert colour in ("rgb(198, 40, 40)", "rgb(46, 125, 50)")  # red: ask for ID, green: no ID needed
    assert (colour == "rgb(198, 40, 40)") == (verdict.inner_text() == "Ask for ID")
    page.get_by_text("Details: detection scores").click()
    expect(page.locator("#raw_json")).to_contain_text("score")
