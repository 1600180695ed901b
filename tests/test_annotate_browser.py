"""The review loop in a real browser (Debian's Chromium through Playwright): a conflicting-duplicate
group decided side by side, and a bulk grid confirmed all-but-marked with the keyboard.

The data set under review is built from the public-domain example photo only (face crops, turned a
little each, plus a re-encoded copy of one crop labelled differently: a conflicting duplicate), so
`python -m tests.test_annotate_browser screenshot` can retake docs/screenshots/annotate.png.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

from age_model.faces.crops import DEFAULT_CROP, CropSpec
from age_model.feedback import FeedbackStore, Status
from tests.app_support import ARTIFACTS, CHROMIUM, chromium_session, free_port, launch_chromium

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PHOTO = REPO_ROOT / "examples" / "astronaut-eileen-collins.jpg"
README_SHOT = REPO_ROOT / "docs" / "screenshots" / "annotate.png"
GRID_SHOT = REPO_ROOT / "docs" / "screenshots" / "annotate-grid.png"
USERS = {"alice": "pw1", "bob": "pw2"}
TIMEOUT = 30_000
FACES = 13  # turned copies of the example face, plus the conflicting copy: more than one grid
ANGLES = (-30, -25, -20, -15, -10, -7, 7, 10, 15, 20, 25, 30)  # degrees: each copy another difference hash


def write_review_set(folder: Path, framing: CropSpec = DEFAULT_CROP) -> Path:
    """A csv-format data set (images/ + labels.csv): FACES face crops of the example photo (``framing``: a
    model's ``settings.crop``), each turned a few degrees (distinct difference hashes), labelled 20-68;
    copy 0 again, re-encoded, labelled 35."""
    from PIL import Image

    from age_model.faces.crops import largest_face_crop

    face = largest_face_crop(Image.open(EXAMPLE_PHOTO).convert("RGB"), framing).resize((200, 200))
    (folder / "images").mkdir(parents=True)
    rows = ["file_name,real_age,split"]
    for k in range(FACES):
        turned = face.rotate(ANGLES[k - 1], resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)) if k else face
        turned.save(folder / "images" / f"face{k:02d}.jpg", quality=95)
        rows.append(f"face{k:02d}.jpg,{20 + 4 * k},train")
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG", quality=70)
    (folder / "images" / "face00-copy.jpg").write_bytes(buffer.getvalue())
    rows.append("face00-copy.jpg,35,train")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def log_in(page, url: str, user: str) -> None:
    page.context.clear_cookies()  # one browser for the module: forget the last annotator's login
    page.goto(f"{url}/annotate/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(USERS[user])
    page.get_by_role("button", name="Login").click()


@pytest.fixture(scope="module")
def review_app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from age_model.ui.server import BackgroundServer, ServerOptions

    work = tmp_path_factory.mktemp("annotate_browser")
    data = write_review_set(work / "faces")
    store = f"sqlite:///{work}/fb.db"
    options = ServerOptions(
        model=str(tiny_model_dir), store=store, annotators=dict(USERS), review=str(data), port=free_port()
    )
    with BackgroundServer(options) as url:
        yield {"url": url, "store": store, "work": work}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=TIMEOUT)
    with chromium_session(tmp_path_factory.mktemp("chromium"), TIMEOUT, {"width": 1360, "height": 1000}) as context:
        yield context


def test_browser_decides_a_conflicting_duplicate_group(review_app, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    try:
        log_in(page, review_app["url"], "alice")
        expect(page.locator("#ann_image img").first).to_be_visible()
        page.locator("#ann_queue_source").get_by_text("Conflicting duplicates").click()
        info = page.locator("#ann_info")
        expect(info).to_contain_text("Conflicting duplicates")  # the page shows it once the groups are found
        members = page.locator("#ann_image .ann-members figure")
        expect(members).to_have_count(2)
        expect(page.locator("#ann_image figcaption").first).to_contain_text("labelled 20")
        expect(page.locator("#ann_image figcaption").nth(1)).to_contain_text("labelled 35")
        ids = [
            re.search(r"[0-9a-f]{12}", t).group(0) for t in page.locator("#ann_image figcaption code").all_inner_texts()
        ]
        page.locator("#ann_info").click()
        page.keyboard.press("2")
        page.keyboard.type("2")
        page.locator("#ann_age input[type=number]").press("Enter")
        expect(page.locator("#ann_message")).to_contain_text("Corrected to 22 on all 2 copies")
        page.screenshot(path=str(ARTIFACTS / "test_browser_conflict_group.png"), full_page=True)
    finally:
        page.close()
    with FeedbackStore(review_app["store"], startup_check=False) as store:
        labels = {s.sample_id[:12]: store.label(s.sample_id) for s in store.samples()}
    decided = [labels[i] for i in ids]
    assert [(lab.age, lab.annotators) for lab in decided] == [(22.0, ("alice",))] * 2
    assert decided[0].status == Status.SETTLED  # 20 -> 22 crosses nothing
    assert decided[1].status == Status.PENDING_SECOND_OPINION  # 35 -> 22 crosses 25: a second annotator must agree


def test_browser_bulk_grid_confirms_all_but_the_marked(review_app, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    try:
        log_in(page, review_app["url"], "bob")
        expect(page.locator("#ann_progress")).to_contain_text("bob")
        page.get_by_role("tab", name="Bulk grid").click()
        cards = page.locator("#bulk_grid .bulk-card")
        expect(cards).to_have_count(12)
        labels = [float(t) for t in page.locator("#bulk_grid .bulk-label").all_inner_texts()]
        ids = [card.get_attribute("data-id") for card in cards.all()]
        page.locator("#bulk_message").click()  # focus on the page, not in a field
        page.keyboard.press("2")  # mark card 2 with the keyboard...
        cards.nth(4).click()  # ...and card 5 with the mouse
        expect(cards.nth(1)).to_have_class(re.compile("marked"))
        expect(cards.nth(4)).to_have_class(re.compile("marked"))
        page.keyboard.press("5")  # a second press takes the mark off again...
        expect(cards.nth(4)).not_to_have_class(re.compile("marked"))
        page.keyboard.press("5")  # ...and a third puts it back
        page.screenshot(path=str(ARTIFACTS / "test_browser_bulk_grid.png"), full_page=True)
        page.keyboard.press("Enter")
        expect(page.locator("#bulk_message")).to_contain_text("Confirmed 10 labels")
        expect(page.locator("#bulk_message")).to_contain_text("the 2 marked wrong wait for you")
        expect(cards).to_have_count(1)  # what is left for bob: the 13th face, not the two he marked
        page.get_by_role("tab", name="Annotate").click()
        page.locator("#ann_next").click()  # the marked ones come first, to correct
        expect(page.locator("#ann_info")).to_contain_text(re.compile(f"sample ({ids[1][:12]}|{ids[4][:12]})"))
    finally:
        page.close()
    with FeedbackStore(review_app["store"], startup_check=False) as store:
        votes = {v.sample_id: v.age for v in store.votes(annotator="bob")}
        claims = store.active_claims()
    confirmed = [(i, lab) for n, (i, lab) in enumerate(zip(ids, labels), start=1) if n not in (2, 5)]
    assert votes == {i: lab for i, lab in confirmed}  # every unmarked card confirmed at its label, nothing else
    assert claims[ids[1]][0] == claims[ids[4]][0] == "bob"  # the marked ones stay bob's for a closer look


def take_readme_screenshots() -> list[Path]:
    """docs/screenshots/annotate.png (a conflicting-duplicate group) and annotate-grid.png (the bulk
    grid), from the example-photo data set, with the shipped model (else a tiny random one)."""
    from playwright.sync_api import expect, sync_playwright

    from age_model.predictor import AgePredictor
    from age_model.ui.server import BackgroundServer, ServerOptions
    from tests.app_support import demo_model

    work = Path(tempfile.mkdtemp(prefix="agecheck-annotate-shot-"))
    model, _ = demo_model(work)
    data = write_review_set(work / "faces", AgePredictor(model).settings.crop)  # framed as the model was trained
    store_url = f"sqlite:///{work}/fb.db"
    options = ServerOptions(
        model=str(model), store=store_url, annotators=dict(USERS), review=str(data), port=free_port()
    )
    with BackgroundServer(options) as url, sync_playwright() as playwright:
        context = launch_chromium(playwright, work / "profile", viewport={"width": 1360, "height": 900})
        page = context.new_page()
        log_in(page, url, "alice")
        expect(page.locator("#ann_image img").first).to_be_visible(timeout=TIMEOUT)
        page.locator("#ann_queue_source").get_by_text("Conflicting duplicates").click()
        expect(page.locator("#ann_image .ann-members figure")).to_have_count(2, timeout=TIMEOUT)
        time.sleep(0.5)
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SHOT), full_page=True)
        page.locator("#ann_queue_source").get_by_text("Data set").click()
        page.get_by_role("tab", name="Bulk grid").click()
        expect(page.locator("#bulk_grid .bulk-card")).to_have_count(12, timeout=TIMEOUT)
        page.locator("#bulk_message").click()
        page.keyboard.press("3")
        time.sleep(0.5)
        page.screenshot(path=str(GRID_SHOT), full_page=True)
        context.close()
    return [README_SHOT, GRID_SHOT]


if __name__ == "__main__" and sys.argv[1:] == ["screenshot"]:
    print(*take_readme_screenshots(), sep="\n")
