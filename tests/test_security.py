"""The public app attacked the way a stranger on the network would: raw HTTP, never logged in.

One file so a reviewer can read every attack in one place. Each test names the hole it closes
(the numbers of the security issue): server files read through a payload path (1), a reader of the
store disturbing a writer (2), loose types at the API boundary (3, 4), anonymous reports treated as
labels (5), credentials in /healthz (6), unthrottled logins (7), upload piles (8), annotate images
served publicly (9), truncated concurrent results (10), and noisy or aborting shutdowns (11).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from age_model.feedback import FeedbackStore, Status
from age_model.feedback.merge import apply_feedback
from age_model.ui.guard import GuardPolicy, LoginThrottle, UploadQuota
from tests.app_support import EXAMPLE_PHOTO, REPO_ROOT, free_port, serve_app

USERS = {"alice": "correct-horse"}


def call(url: str, api: str, data: list, timeout: float = 60) -> tuple[str, object]:
    """Gradio's REST call route: ("complete", output) or ("error", message)."""
    with httpx.Client(base_url=url, timeout=timeout) as http:
        posted = http.post(f"/gradio_api/call/{api}", json={"data": data})
        if posted.status_code != 200:
            return "refused", posted.text
        event_id = posted.json()["event_id"]
        text = http.get(f"/gradio_api/call/{api}/{event_id}").text
    event, payload = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    try:
        payload = json.loads(payload) if payload else payload
    except ValueError:
        pass
    return event or "none", payload


def upload(url: str, path: Path, prefix: str = "") -> dict:
    with httpx.Client(base_url=url, timeout=60) as http:
        response = http.post(f"{prefix}/gradio_api/upload", files={"files": (path.name, path.read_bytes())})
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}


def files_with_bytes(folder: Path, data: bytes) -> list[Path]:
    digest = hashlib.sha256(data).hexdigest()
    return [p for p in folder.rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest]


@pytest.fixture(scope="module")
def secrets_on_disk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("secrets")
    annotators = work / "annotators.txt"
    annotators.write_text("alice:correct-horse\n")
    link = work / "innocent.jpg"
    link.symlink_to("/etc/passwd")
    from PIL import Image

    photo = work / "server-photo.jpg"  # an image on the server that is no example: /predict must not box and return it
    Image.open(EXAMPLE_PHOTO).convert("RGB").rotate(90, expand=True).save(photo, quality=80)
    return {"annotators": annotators, "symlink": link, "work": work, "photo": photo}


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, secrets_on_disk: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    store_dir = tmp_path_factory.mktemp("secure_store")
    store_url = f"sqlite:///{store_dir / 'feedback.db'}"
    with serve_app(
        tiny_model_dir,
        store_url,
        annotators=USERS,
        annotators_file=str(secrets_on_disk["annotators"]),
        guard=GuardPolicy(per_address_bytes=3 * 1024 * 1024, total_bytes=50 * 1024 * 1024),
    ) as url:
        yield {
            "url": url,
            "store_url": store_url,
            "store_dir": store_dir,
            "uploads": Path(os.environ["GRADIO_TEMP_DIR"]),
        }


def attack_paths(secrets_on_disk: dict[str, Path], app: dict) -> list[str]:
    db = app["store_dir"] / "feedback.db"
    return [
        "/etc/passwd",
        str(secrets_on_disk["annotators"]),
        str(db),
        str(secrets_on_disk["symlink"]),
        str(app["uploads"] / ".." / ".." / "etc" / "passwd"),
        "../../../../../../etc/passwd",
        urllib.parse.quote("/etc/passwd", safe=""),
        str(REPO_ROOT / "README.md"),
        str(secrets_on_disk["photo"]),
    ]


# --------------------------------------------------------------------------- 1: server files


@pytest.mark.parametrize("api", ["predict", "report_age"])
def test_no_endpoint_reads_a_server_path(app, secrets_on_disk, api):
    """A FileData payload naming a server file is refused; nothing is copied into the cache."""
    for path in attack_paths(secrets_on_disk, app):
        payload = {"path": path, "meta": {"_type": "gradio.FileData"}}
        data = [payload, 25] if api == "predict" else [payload, 1, 30, True, ""]
        event, output = call(app["url"], api, data)
        assert event in ("error", "refused"), (path, event, output)
    for target in (
        "/etc/passwd",
        str(secrets_on_disk["annotators"]),
        str(REPO_ROOT / "README.md"),
        str(secrets_on_disk["photo"]),
    ):
        assert files_with_bytes(app["uploads"], Path(target).read_bytes()) == [], target


def test_file_route_serves_no_server_file(app, secrets_on_disk):
    """Neither page's file route serves anything outside the files Gradio itself made."""
    db = app["store_dir"] / "feedback.db"
    FeedbackStore(app["store_url"]).close()  # make sure it exists
    with httpx.Client(base_url=app["url"], timeout=30) as http:
        for prefix in ("", "/annotate"):
            for path in [
                "/etc/passwd",
                str(secrets_on_disk["annotators"]),
                str(db),
                str(secrets_on_disk["symlink"]),
                str(REPO_ROOT / "README.md"),
                "../../etc/passwd",
                urllib.parse.quote("/etc/passwd", safe=""),
            ]:
                response = http.get(f"{prefix}/gradio_api/file={path}")
                assert response.status_code in (401, 403, 404), (prefix, path, response.status_code)
                assert b"root:" not in response.content and b"correct-horse" not in response.content


def test_an_upload_still_works(app):
    """The fix refuses server paths, not the user's own uploads."""
    event, output = call(app["url"], "predict", [upload(app["url"], EXAMPLE_PHOTO), 25])
    assert event == "complete", output
    assert output[3]["faces"], output


# --------------------------------------------------------------------------- 2: readers and a writer


def test_readers_of_the_store_never_disturb_a_writer(tmp_path: Path):
    """Votes are written while other processes run stats, fsck and export: none is lost."""
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(url)
    sample_id = store.add_image(EXAMPLE_PHOTO.read_bytes(), source="fixture", original_label=30.0)
    acknowledged: list[int] = []
    readers = []
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    commands = (["stats"], ["fsck"], ["export", str(tmp_path / "export")])
    for i in range(60):
        acknowledged.append(store.add_vote(sample_id, 20 + i % 30, f"annotator{i % 7}").id)
        if i % 20 == 0:
            command = commands[(i // 20) % len(commands)]
            readers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "age_model.feedback", *command, "--store", url],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
    for reader in readers:
        _, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err.decode()[-500:]
    store.close()
    with FeedbackStore(url) as reopened:
        stored = {vote.id for vote in reopened.votes()}
    assert set(acknowledged) <= stored


# --------------------------------------------------------------------------- 3, 4: strict types


@pytest.mark.parametrize("consent", ["false", "no", "true", 1, 0, None, [True]])
def test_consent_must_be_a_json_boolean(app, consent):
    before = len(FeedbackStore(app["store_url"], startup_check=False).votes())
    event, output = call(app["url"], "report_age", [upload(app["url"], EXAMPLE_PHOTO), 1, 30, consent, ""])
    assert event == "error", output
    assert len(FeedbackStore(app["store_url"], startup_check=False).votes()) == before


def test_threshold_nan_and_other_junk_refused(app):
    photo = upload(app["url"], EXAMPLE_PHOTO)
    with httpx.Client(base_url=app["url"], timeout=60) as http:  # a bare NaN token, as the attack sent it
        posted = http.post(
            "/gradio_api/call/predict",
            content=b'{"data": [' + json.dumps(photo).encode() + b", NaN]}",
            headers={"content-type": "application/json"},
        )
        if posted.status_code == 200:
            text = http.get(f"/gradio_api/call/predict/{posted.json()['event_id']}").text
            assert "event: error" in text, text
    for threshold in ["25", 1e9, -5, True, None, "Infinity"]:
        event, output = call(app["url"], "predict", [photo, threshold])
        assert event == "error", (threshold, output)


@pytest.mark.parametrize("age", [-1, 500, "thirty", True, None])
def test_reported_age_must_be_a_finite_age(app, age):
    event, output = call(app["url"], "report_age", [upload(app["url"], EXAMPLE_PHOTO), 1, age, True, ""])
    assert event == "error", output


def test_bare_infinity_and_nan_ages_refused(app):
    photo = json.dumps(upload(app["url"], EXAMPLE_PHOTO)).encode()
    with httpx.Client(base_url=app["url"], timeout=60) as http:
        for token in (b"Infinity", b"NaN", b"-Infinity"):
            posted = http.post(
                "/gradio_api/call/report_age",
                content=b'{"data": [' + photo + b", 1, " + token + b', true, ""]}',
                headers={"content-type": "application/json"},
            )
            if posted.status_code == 200:
                assert "event: error" in http.get(f"/gradio_api/call/report_age/{posted.json()['event_id']}").text


# --------------------------------------------------------------------------- 5: unverified reports


def test_anonymous_reports_are_unverified_and_never_train(app, tmp_path: Path):
    """A stranger's report is a lead for annotators: pseudonymous, unverified, not in training."""
    event, output = call(app["url"], "report_age", [upload(app["url"], EXAMPLE_PHOTO), 1, 12, True, "from a stranger"])
    assert event == "complete", output
    with FeedbackStore(app["store_url"], startup_check=False) as store:
        votes = [v for v in store.votes() if v.note == "from a stranger"]
        assert votes and all(v.annotator.startswith("public:") and v.annotator != "public:" for v in votes)
        label = store.label(votes[-1].sample_id)
        assert label.status == Status.UNVERIFIED
        import datasets

        base = datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict({"id": ["x"], "age": [30.0], "source": ["d"], "image": [None]})}
        )
        _, summary = apply_feedback(base, app["store_url"])
        assert summary["added"] == 0  # the upload did not join training
        # An annotator confirms: now it is a label.
        store.add_vote(votes[-1].sample_id, 12, "alice")
        assert store.label(votes[-1].sample_id).status != Status.UNVERIFIED


def test_test_split_corrections_are_withheld_unless_asked(tmp_path: Path):
    import datasets

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    with FeedbackStore(url) as store:
        sample_id = store.add_image(EXAMPLE_PHOTO.read_bytes(), source="fixture", original_label=30.0)
        store.add_vote(sample_id, 31, "alice")
        store.add_vote(sample_id, 31, "bob")
    rows = {"id": [sample_id], "age": [30.0], "source": ["fixture"]}
    base = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"id": ["other"], "age": [5.0], "source": ["fixture"]}),
            "test": datasets.Dataset.from_dict(rows),
        }
    )
    merged, summary = apply_feedback(base, url)
    assert merged["test"]["age"] == [30.0] and summary["withheld_test"] == 1
    merged, summary = apply_feedback(base, url, include_test=True)
    assert merged["test"]["age"] == [31.0] and summary["corrected_by_split"] == {"train": 0, "test": 1}


# --------------------------------------------------------------------------- 6: health


def test_healthz_has_no_credentials_and_says_503_when_down(tiny_model_dir: Path, tmp_path: Path, caplog):
    url = "postgresql://agecheck:hunter2secret@127.0.0.1:1/nowhere?images_dir=" + str(tmp_path / "img")
    with caplog.at_level("INFO"), serve_app(tiny_model_dir, url) as base:
        response = httpx.get(f"{base}/healthz", timeout=30)
    assert response.status_code == 503
    assert "hunter2secret" not in response.text
    assert response.json()["store_reachable"] is False
    assert "hunter2secret" not in caplog.text


def test_healthz_ok_when_everything_answers(app):
    response = httpx.get(f"{app['url']}/healthz", timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert app["store_url"] not in response.text


# --------------------------------------------------------------------------- 7: login throttling


def test_login_throttled_after_five_failures(app):
    with httpx.Client(base_url=app["url"], timeout=30) as http:
        codes = [
            http.post("/annotate/login", data={"username": "alice", "password": f"guess{i}"}).status_code
            for i in range(8)
        ]
        assert codes[:5] == [400] * 5, codes
        assert 429 in codes[5:], codes
        refused = http.post("/annotate/login", data={"username": "alice", "password": "correct-horse"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1  # even the right password waits


def test_throttle_delays_grow_and_reset():
    now = [0.0]
    throttle = LoginThrottle(GuardPolicy(free_failures=5, max_delay=60), clock=lambda: now[0])
    for _ in range(5):
        assert throttle.wait_needed("1.2.3.4", "bob") == 0
        throttle.failed("1.2.3.4", "bob")
    delays = []
    for _ in range(4):
        delays.append(throttle.wait_needed("1.2.3.4", "bob"))
        now[0] += delays[-1]
        throttle.failed("1.2.3.4", "bob")
    assert delays == [1, 2, 4, 8]
    assert throttle.wait_needed("5.6.7.8", "bob") > 0  # per user, from any address
    assert throttle.wait_needed("1.2.3.4", "carol") > 0  # per address, for any user
    throttle.succeeded("1.2.3.4", "bob")
    assert throttle.wait_needed("1.2.3.4", "bob") == 0


# --------------------------------------------------------------------------- 8: uploads


def test_upload_quota_per_address(app, tmp_path: Path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(900 * 1024))
    with httpx.Client(base_url=app["url"], timeout=60) as http:
        codes = [
            http.post("/gradio_api/upload", files={"files": ("big.bin", big.read_bytes())}).status_code
            for _ in range(6)
        ]
    assert 429 in codes, codes
    assert codes[0] == 200


def test_upload_quota_total_and_window():
    now = [0.0]
    quota = UploadQuota(GuardPolicy(per_address_bytes=100, total_bytes=150, window=60), clock=lambda: now[0])
    assert quota.take("a", 90) is None
    assert quota.take("a", 20) is not None  # over the address's allowance
    assert quota.take("b", 70) is not None  # over the total
    now[0] += 61
    assert quota.take("b", 70) is None  # the window moved on


def test_uploads_removed_when_the_server_stops(tiny_model_dir: Path, tmp_path: Path):
    process, port = _start_app(tiny_model_dir, tmp_path)
    try:
        upload(f"http://127.0.0.1:{port}", EXAMPLE_PHOTO)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    text = output.decode(errors="replace")
    folder = Path(text.split("uploads kept in ", 1)[1].split()[0])
    assert folder.name.startswith("agecheck-uploads-")
    assert not folder.exists(), text[-1500:]


# --------------------------------------------------------------------------- 9: annotate images


def test_annotate_images_never_become_public_files(app):
    """The annotate page sends its images inline; the public file route has nothing to give."""
    from gradio_client import Client

    with FeedbackStore(app["store_url"], startup_check=False) as store:
        store.add_upload(EXAMPLE_PHOTO.read_bytes(), 40, "public:0123456789ab", consent=True)
    alice = Client(f"{app['url']}/annotate/", auth=("alice", "correct-horse"), analytics_enabled=False, verbose=False)
    try:
        item = alice.predict("submissions", "", api_name="/next")
    finally:
        alice.close()
    image_html = item[1]
    assert image_html.startswith('<img src="data:image/jpeg;base64,')
    shown = base64.b64decode(image_html.split(",", 1)[1].split('"', 1)[0])
    assert files_with_bytes(app["uploads"], shown) == []


# --------------------------------------------------------------------------- 10: concurrent results


def test_parallel_identical_requests_all_get_whole_files(app):
    photo = upload(app["url"], EXAMPLE_PHOTO)

    def one(_: int) -> bytes:
        event, output = call(app["url"], "predict", [photo, 25], timeout=120)
        assert event == "complete", output
        return httpx.get(output[0]["url"], timeout=30).content

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        images = list(pool.map(one, range(16)))
    import io

    from PIL import Image

    for data in images:
        assert data.endswith(b"\xff\xd9"), "truncated JPEG"
        Image.open(io.BytesIO(data)).load()


# --------------------------------------------------------------------------- 11: shutdown and logs


def _start_app(tiny_model_dir: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "app.py"),
            "--model",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--store",
            f"sqlite:///{tmp_path / 'fb.db'}",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503):
                return process, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(process.stdout.read().decode()[-2000:])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_clean_stop_with_review_within_5_s(tiny_model_dir: Path, fixture_dir: Path, tmp_path: Path, sig):
    annotators = tmp_path / "users.txt"
    annotators.write_text("alice:pw\n")
    process, port = _start_app(tiny_model_dir, tmp_path, "--annotators", str(annotators), "--review", str(fixture_dir))
    time.sleep(1.0)
    started = time.monotonic()
    process.send_signal(sig)
    output, _ = process.communicate(timeout=30)
    took = time.monotonic() - started
    text = output.decode(errors="replace")
    assert "terminate called" not in text and "Aborted" not in text, text[-2000:]
    assert process.returncode in (0, -sig), (process.returncode, text[-2000:])  # uvicorn re-raises the signal it caught
    assert took < 5, took


def test_a_bad_upload_logs_one_line(tiny_model_dir: Path, tmp_path: Path):
    process, port = _start_app(tiny_model_dir, tmp_path)
    try:
        bad = tmp_path / "not-a-photo.jpg"
        bad.write_bytes(b"this is not a JPEG" * 100)
        event, output = call(f"http://127.0.0.1:{port}", "predict", [upload(f"http://127.0.0.1:{port}", bad), 25])
        assert event == "error"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output.decode(errors="replace"), output.decode()[-3000:]


def test_annotators_file_is_git_ignored():
    result = subprocess.run(["git", "check-ignore", "-q", "annotators.txt"], cwd=REPO_ROOT)
    assert result.returncode == 0
