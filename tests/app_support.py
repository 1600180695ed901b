"""Helpers for the app tests (API and browser) and the README screenshots.

`python -m tests.app_support screenshots` retakes docs/screenshots/*.png with the shipped model
(else a tiny random model) and only the
public-domain example photo (never the research-only fixture faces).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "tests" / "_artifacts"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
EXAMPLE_PHOTO = REPO_ROOT / "examples" / "astronaut-eileen-collins.jpg"
CAT_PHOTO = REPO_ROOT / "examples" / "cat-no-face.jpg"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(model: str | Path, store: str, **options: object) -> Iterator[str]:
    """The whole app (both pages, /healthz) on a free localhost port; yields its URL."""
    from age_model.ui.server import BackgroundServer, ServerOptions

    server = BackgroundServer(ServerOptions(model=str(model), store=store, port=free_port(), **options))
    with server as url:
        yield url


def write_y4m(
    photo: str | Path,
    dest: str | Path,
    size: tuple[int, int] = (640, 480),
    frames: int = 2,
    align: str = "center",
    drift: int = 0,
) -> Path:
    """A fake-camera video for Chromium (--use-file-for-fake-video-capture): the photo fitted into
    `size` (on the left with align="left", which makes a mirrored frame easy to spot), as raw
    YUV 4:2:0 frames behind a YUV4MPEG2 header (full-range BT.601, as Pillow's YCbCr). With
    `drift`, frame i has the photo moved `i * drift` px to the right (a person walking up), 10 frames/s."""
    width, height = size
    assert width % 2 == 0 and height % 2 == 0, "4:2:0 needs even sides"
    image = Image.open(photo).convert("RGB")
    image.thumbnail(size)
    left = 0 if align == "left" else (width - image.width) // 2
    half = (width // 2, height // 2)
    video = [f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode()]
    for number in range(frames):
        canvas = Image.new("RGB", size, (128, 128, 128))
        canvas.paste(image, (left + number * drift, (height - image.height) // 2))
        y, cb, cr = canvas.convert("YCbCr").split()
        video.append(
            b"FRAME\n"
            + y.tobytes()
            + cb.resize(half, Image.BILINEAR).tobytes()
            + cr.resize(half, Image.BILINEAR).tobytes()
        )
    dest = Path(dest)
    dest.write_bytes(b"".join(video))
    return dest


def chromium_args(y4m: str | Path | None = None) -> list[str]:
    args = list(CHROMIUM_ARGS)
    if y4m:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}",
        ]
    return args


def launch_chromium(playwright, profile: str | Path, y4m: str | Path | None = None, **context_options):
    """Debian's Chromium with a fresh profile folder (Playwright passes it as --user-data-dir);
    with `y4m`, the camera is a fake one that shows that video. Returns the browser context."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=chromium_args(y4m), **context_options
    )


@contextlib.contextmanager
def chromium_session(work: Path, timeout_ms: int, viewport: dict[str, int], y4m: str | Path | None = None) -> Iterator:
    """One Chromium context for a test module (profile under ``work``), every wait bounded by ``timeout_ms``;
    closed at the end. ``ARTIFACTS`` exists for the screenshots."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, work / "profile", y4m, viewport=viewport)
        context.set_default_timeout(timeout_ms)
        try:
            yield context
        finally:
            context.close()


def demo_model(work: Path) -> tuple[Path, str]:
    """The model the app ships (models/agecheck-default), or (for layout only) a tiny random model made in `work`."""
    shipped = REPO_ROOT / "models" / "agecheck-default"
    if (shipped / "config.json").is_file():
        return shipped, "shipped model"
    sys.path.insert(0, str(REPO_ROOT))
    from tests.conftest import make_tiny_model

    return make_tiny_model(work / "tiny-random-model"), "tiny random model"


# --------------------------------------------------------------------------- browser steps


def upload_and_estimate(page, photo: str | Path, timeout: float = 30_000) -> None:
    """Put a file into #photo and press Estimate; returns when the verdict is shown."""
    from playwright.sync_api import expect

    page.locator("#photo input[type=file]").set_input_files(str(photo))
    expect(page.locator("#photo img[src*='gradio_api/file=']")).to_be_visible(timeout=timeout)
    page.locator("#estimate").click()
    expect(page.locator("#verdict h3")).to_be_visible(timeout=timeout)


def capture_webcam(page, timeout: float = 30_000) -> None:
    """Take a picture with the (fake) camera in #photo; returns when the capture is uploaded."""
    from playwright.sync_api import expect

    photo = page.locator("#photo")
    photo.get_by_role("button", name="Capture from camera").click()
    photo.get_by_text("Click to Access Webcam").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#photo video'); return v && v.readyState >= 2 && v.videoWidth > 0; "
        "}",
        timeout=timeout,
    )
    photo.get_by_role("button", name="capture photo").click()
    expect(photo.locator("img[src*='gradio_api/file=']")).to_be_visible(timeout=timeout)


def start_live_camera(page, timeout: float = 30_000) -> None:
    """Open the Live camera mode and start streaming the (fake) camera to the server."""
    page.get_by_role("tab", name="Live camera").click()
    camera = page.locator("#live_camera")
    camera.get_by_text("Click to Access Webcam").click()
    page.wait_for_function(
        "() => { const v = document.querySelector('#live_camera video'); "
        "return v && v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=timeout,
    )
    camera.get_by_role("button", name="capture photo").click()  # in streaming mode this starts the stream


def take_screenshots(out: Path = SCREENSHOTS) -> list[Path]:
    """docs/screenshots/predict.png (upload), predict-webcam.png and predict-live.png (fake camera), from the
    example photo only."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="agecheck-shots-"))
    taken = []
    try:
        model, kind = demo_model(work)
        print(f"model: {model} ({kind})")
        y4m = write_y4m(EXAMPLE_PHOTO, work / "astronaut.y4m", frames=10, drift=4)
        with serve_app(model, f"sqlite:///{work}/fb.db") as url, sync_playwright() as p:
            browser = launch_chromium(p, work / "profile", y4m, viewport={"width": 1280, "height": 860})
            page = browser.new_page()
            page.goto(url + "/")
            upload_and_estimate(page, EXAMPLE_PHOTO)
            page.wait_for_timeout(300)  # let the annotated image finish fading in
            taken.append(_save_png(page, out / "predict.png"))
            page.goto(url + "/")
            capture_webcam(page)
            page.locator("#estimate").click()
            page.locator("#verdict h3").wait_for()
            page.wait_for_timeout(300)
            taken.append(_save_png(page, out / "predict-webcam.png"))
            page.goto(url + "/")
            start_live_camera(page)
            page.locator("#live_status").get_by_text("Frame").wait_for()
            page.wait_for_timeout(1500)
            taken.append(_save_png(page, out / "predict-live.png"))
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return taken


def _save_png(page, path: Path) -> Path:
    """A full-page screenshot, quantised so it stays well under 300 KB."""
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), full_page=True)
    Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    print(f"{path} {path.stat().st_size // 1024} KB")
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["screenshots"]:
        raise SystemExit(__doc__)
    take_screenshots()
