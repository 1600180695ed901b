"""The public /age_groups endpoint attacked over raw HTTP, as tests/test_security.py does for the
other endpoints: server paths, loose types, hostile zips; and no server file is ever deleted."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.app_support import serve_app
from tests.test_security import call, upload


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    store = f"sqlite:///{tmp_path_factory.mktemp('groups_security')}/fb.db"
    with serve_app(tiny_model_dir, store) as url:
        yield {"url": url, "uploads": Path(os.environ["GRADIO_TEMP_DIR"])}


@pytest.fixture(scope="module")
def server_photo(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A face photo on the server that no upload brought: it must be neither counted nor deleted."""
    path = tmp_path_factory.mktemp("server_files") / "till-camera.jpg"
    shutil.copy(fixture_dir / "images" / "fgnet_082A18.JPG", path)
    return path


def test_the_endpoint_is_named(app) -> None:
    info = httpx.get(app["url"] + "/gradio_api/info", timeout=30).json()
    assert "/age_groups" in info["named_endpoints"]


def test_server_paths_are_refused_and_never_deleted(app, server_photo: Path) -> None:
    for path in (
        str(server_photo),
        "/etc/passwd",
        str(app["uploads"] / ".." / server_photo.name),
        f"../../../../..{server_photo}",
    ):
        event, output = call(app["url"], "age_groups", [[{"path": path, "meta": {"_type": "gradio.FileData"}}], 1.0])
        assert event in ("error", "refused"), (path, event, output)
    assert server_photo.is_file()


@pytest.mark.parametrize("every", ["1", True, None, -1, 1e9])
def test_strict_interval(app, fixture_dir: Path, every) -> None:
    photo = upload(app["url"], fixture_dir / "images" / "fgnet_082A18.JPG")
    event, output = call(app["url"], "age_groups", [[photo], every])
    assert event == "error" and "/tmp" not in str(output), (
        every,
        event,
        output,
    )  # the slider or our own check refuses it


def test_hostile_zips_over_the_api(app, fixture_dir: Path, tmp_path: Path) -> None:
    photo = (fixture_dir / "images" / "fgnet_082A18.JPG").read_bytes()
    traversal = tmp_path / "traversal.zip"
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("../../etc/cron.d/evil.jpg", photo)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.jpg", photo)
        archive.writestr("b.png", bytes(40 * 2**20))  # 40 MB of zeros in ~40 KB
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(1001):
            archive.writestr(f"{i}.jpg", b"x")
    for path, words in ((traversal, "names files outside itself"), (bomb, "zip bomb"), (many, "1,001 files")):
        event, output = call(app["url"], "age_groups", [[upload(app["url"], path)], 1.0])
        assert event == "error" and words in str(output) and "/tmp" not in str(output), (path, output)
    assert not Path("/etc/cron.d/evil.jpg").exists()
    # A good photo beside a bad zip: the photo is counted, the zip reported.
    event, output = call(
        app["url"],
        "age_groups",
        [[upload(app["url"], fixture_dir / "images" / "fgnet_082A18.JPG"), upload(app["url"], traversal)], 1.0],
    )
    assert event == "complete", output
    assert "1 face in 1 photo" in output[0] and "traversal.zip: refused" in output[0]


def test_uploads_are_deleted_after_counting(app, fixture_dir: Path) -> None:
    photo = upload(app["url"], fixture_dir / "images" / "fgnet_071A43.JPG")
    assert Path(photo["path"]).is_file()
    event, output = call(app["url"], "age_groups", [[photo], 1.0])
    assert event == "complete", output
    assert not Path(photo["path"]).exists()
