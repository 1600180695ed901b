"""The Age groups tab in a real browser (Debian's Chromium through Playwright): photos, a zip and a
video in; the chart, the table and the CSV out; a bad zip gives a readable message.

Screenshots land in tests/_artifacts/ (gitignored: they show research-only faces).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.app_support import ARTIFACTS, CHROMIUM, chromium_session, serve_app
from tests.groups_support import three_faces_video, zip_of

if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

TIMEOUT = 60_000  # ms; every wait is for an element, never for the network
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    with serve_app(tiny_model_dir, f"sqlite:///{tmp_path_factory.mktemp('groups_browser')}/fb.db") as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with chromium_session(tmp_path_factory.mktemp("chromium"), TIMEOUT, {"width": 1280, "height": 900}) as context:
        yield context


@pytest.fixture
def page(browser, app, request):
    page = browser.new_page()
    page.goto(app + "/")
    page.get_by_role("tab", name="Age groups").click()
    expect(page.locator("#groups_count")).to_be_visible()
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    page.close()


def test_photos_zip_and_video_give_chart_table_and_csv(page, app, fixture_dir: Path, tmp_path: Path) -> None:
    images = fixture_dir / "images"
    photos = [images / "fgnet_005A61.JPG", images / "fgnet_009A05.JPG"]
    archive = zip_of(
        tmp_path / "till-3.zip",
        {"a.jpg": (images / "fgnet_006A69.JPG").read_bytes(), "b.jpg": (images / "fgnet_008A12.JPG").read_bytes()},
    )
    video = three_faces_video(tmp_path / "entrance.mp4", images)
    page.locator("#groups_files input[type=file]").set_input_files([str(p) for p in (*photos, archive, video)])
    for name in ("fgnet_005A61", "fgnet_009A05", "till-3", "entrance"):  # (the page shows a name and its suffix apart)
        expect(page.locator("#groups_files")).to_contain_text(name)
    page.locator("#groups_count").click()
    status = page.locator("#groups_status")
    expect(status).to_contain_text("7 faces in 4 photos (0 without a face) and 1 video (8 s, 8 frames sampled).")
    expect(status).to_contain_text("uncertain")
    expect(page.locator("#groups_chart").locator("canvas, svg").first).to_be_visible()
    rows = page.locator("#groups_table [role=row]:has([role=gridcell])")
    expect(rows).to_have_count(7)
    files = {row.locator("[role=gridcell]").first.inner_text().strip() for row in rows.all()}
    assert files == {"fgnet_005A61.JPG", "fgnet_009A05.JPG", "till-3.zip:a.jpg", "till-3.zip:b.jpg", "entrance.mp4"}
    link = page.locator("#groups_csv a[href*='gradio_api/file=']").first
    expect(link).to_be_visible()
    text = httpx.get(urljoin(app + "/", link.get_attribute("href")), timeout=10).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 7 and sum(1 for r in table if r["file"] == "entrance.mp4") == 3
    assert all(r["band"] for r in table)
    expect(page.locator("#groups_files")).not_to_contain_text("entrance")  # uploads cleared (and deleted)
    expect(page.locator("#groups_intro")).to_contain_text("no photo, video frame or face crop is stored")


def test_a_corrupt_zip_gives_a_readable_message(page, tmp_path: Path) -> None:
    bad = tmp_path / "holiday.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    page.locator("#groups_files input[type=file]").set_input_files(str(bad))
    expect(page.locator("#groups_files")).to_contain_text("holiday")
    page.locator("#groups_count").click()
    toast = page.locator("[data-testid=toast-body]").filter(has_text="holiday.zip: not a readable zip file")
    expect(toast).to_be_visible()
    assert "/tmp" not in toast.inner_text()
