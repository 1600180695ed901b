"""Helpers for the Age groups tests and bench: synthetic videos from photos, and the tab's screenshot.

`python -m tests.groups_support screenshot` retakes docs/screenshots/age_groups.png with the shipped
model (else a tiny random model) and only the public-domain example photo (never the research-only
fixture faces).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Placed:
    """A photo in a scene: its top-left corner, its height on the frame and how far it moves per frame."""

    photo: Path
    x: int
    y: int
    height: int = 300
    dx: float = 0.0


@dataclass
class Scene:
    seconds: float
    photos: list[Placed] = field(default_factory=list)


def write_video(
    dest: str | Path, scenes: list[Scene], fps: float = 5.0, size: tuple[int, int] = (640, 480), fourcc: str = "mp4v"
) -> Path:
    """An MP4 (OpenCV VideoWriter) of scenes, each some seconds of photos on a grey background."""
    import cv2

    dest = Path(dest)
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    cache: dict[tuple[Path, int], Image.Image] = {}
    try:
        for scene in scenes:
            for frame in range(round(scene.seconds * fps)):
                canvas = Image.new("RGB", size, (128, 128, 128))
                for placed in scene.photos:
                    key = (placed.photo, placed.height)
                    if key not in cache:
                        image = Image.open(placed.photo).convert("RGB")
                        cache[key] = image.resize((round(image.width * placed.height / image.height), placed.height))
                    canvas.paste(cache[key], (round(placed.x + placed.dx * frame), placed.y))
                writer.write(cv2.cvtColor(np.asarray(canvas), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return dest


def three_faces_video(dest: str | Path, images: Path, fps: float = 5.0) -> Path:
    """8 s: one face drifting right (0-3 s), an empty second, then two faces side by side (4-8 s).

    Every sampled frame holds a known number of faces (1, 0, 2); three different faces in all.
    """
    one, two, three = images / "fgnet_082A18.JPG", images / "fgnet_001A29.JPG", images / "fgnet_071A43.JPG"
    return write_video(
        dest,
        [
            Scene(3.0, [Placed(one, 150, 80, 320, dx=3.0)]),
            Scene(1.0, []),
            Scene(4.0, [Placed(two, 20, 100, 300), Placed(three, 340, 100, 300)]),
        ],
        fps=fps,
    )


def zip_of(dest: str | Path, files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dest, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return Path(dest)


def take_screenshot(out: Path | None = None) -> Path:
    """docs/screenshots/age_groups.png: the tab after counting the example photo (public domain only)."""
    from playwright.sync_api import expect, sync_playwright

    from tests.app_support import EXAMPLE_PHOTO, SCREENSHOTS, _save_png, demo_model, launch_chromium, serve_app

    out = out or SCREENSHOTS / "age_groups.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="agecheck-shots-"))
    try:
        model, kind = demo_model(work)
        print(f"model: {model} ({kind})")
        # The example photo, and a zip holding it mirrored and scaled, so the chart has a few faces.
        photo = Image.open(EXAMPLE_PHOTO).convert("RGB")
        extra = {}
        for i, scale in enumerate((1.0, 0.8, 0.6)):
            variant = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 == 0 else photo
            variant = variant.resize((round(photo.width * scale), round(photo.height * scale)))
            path = work / f"variant-{i}.jpg"
            variant.save(path, quality=90)
            extra[f"shop-{i + 1}.jpg"] = path.read_bytes()
        archive = zip_of(work / "store-photos.zip", extra)
        with serve_app(model, f"sqlite:///{work}/fb.db") as url, sync_playwright() as p:
            browser = launch_chromium(p, work / "profile", viewport={"width": 1280, "height": 900})
            page = browser.new_page()
            page.goto(url + "/")
            page.get_by_role("tab", name="Age groups").click()
            page.locator("#groups_files input[type=file]").set_input_files([str(EXAMPLE_PHOTO), str(archive)])
            expect(page.locator("#groups_files")).to_contain_text("store-photos", timeout=30_000)
            page.locator("#groups_count").click()
            expect(page.locator("#groups_status")).to_contain_text("faces in", timeout=60_000)
            page.locator("#groups_chart canvas, #groups_chart svg").first.wait_for(timeout=30_000)
            page.wait_for_timeout(800)
            _save_png(page, out)
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["screenshot"]:
        raise SystemExit(__doc__)
    take_screenshot()
