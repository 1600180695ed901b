"""The annotators' page at /annotate: the review queue through gradio_client (logged in as alice
and bob), refusals without a login, Stats and export, the score cache, the scheduled push without
a Hub, and once in a real browser (Debian chromium): log in, correct an item with the keyboard,
see progress move.

docs/screenshots/annotate.png is retaken by `python -m tests.test_annotate_browser screenshot`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from age_model.feedback import FeedbackStore  # noqa: E402
from tests.app_support import ARTIFACTS, CHROMIUM, launch_chromium  # noqa: E402

USERS = {"alice": "pw1", "bob": "pw2", "carol": "pw3"}
SID, IMAGE, CROP, INFO, LABEL, MODEL, AGE, SLIDER, VOTES, PROGRESS, MESSAGE = range(11)  # the view's outputs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The whole app with the fixture data set under review, three annotators and a fresh store."""
    from age_model.ui.server import BackgroundServer, ServerOptions

    work = tmp_path_factory.mktemp("annotate")
    store = f"sqlite:///{work}/fb.db"
    options = ServerOptions(
        model=str(tiny_model_dir), store=store, annotators=dict(USERS), review=str(fixture_dir), port=free_port()
    )
    import age_model.review_scoring as scoring

    delay, scoring.SCORE_DELAY_S = scoring.SCORE_DELAY_S, 0.0  # score at once: these tests check the scored order
    server = BackgroundServer(options)
    try:
        with server as url:
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and sum(len(f.read_text().splitlines()) for f in (work / "review_scores").glob("*.jsonl")) < 16
            ):
                time.sleep(0.2)
            yield {"url": url, "store": store, "work": work, "server": server, "options": options}
    finally:
        scoring.SCORE_DELAY_S = delay


def client(app: dict, user: str | None):
    from gradio_client import Client

    auth = (user, USERS[user]) if user else None
    return Client(f"{app['url']}/annotate/", auth=auth, verbose=False, analytics_enabled=False)


@pytest.fixture(scope="module")
def alice(app):
    return client(app, "alice")


@pytest.fixture(scope="module")
def bob(app):
    return client(app, "bob")


@pytest.fixture
def store(app) -> Iterator[FeedbackStore]:
    with FeedbackStore(app["store"], startup_check=False) as opened:
        yield opened


def active_votes(store: FeedbackStore, annotator: str) -> dict[str, float]:
    """sample id -> age of the annotator's votes that are not undone."""
    rows = store.votes(annotator=annotator)
    undone = {v.retracts for v in rows if v.kind == "retract"}
    return {v.sample_id: v.age for v in rows if v.kind == "vote" and v.id not in undone}


def test_login_is_required(app):
    import httpx

    with pytest.raises(Exception):
        client(app, None)
    from gradio_client import Client

    with pytest.raises(Exception):
        Client(f"{app['url']}/annotate/", auth=("alice", "wrong"), verbose=False, analytics_enabled=False)
    anonymous = httpx.post(f"{app['url']}/annotate/gradio_api/call/confirm", json={"data": ["dataset", "0" * 64]})
    assert anonymous.status_code == 401
    assert httpx.get(f"{app['url']}/healthz").status_code == 200  # the demo side stays public


def test_queue_hands_out_worst_first_and_records_confirm_correct_undo_skip(alice, store, app):
    first = alice.predict("dataset", "", api_name="/next")
    assert re.fullmatch(r"[0-9a-f]{64}", first[SID]) and first[IMAGE].startswith(
        '<img src="data:image/jpeg;base64,'
    )  # inline: no public file
    assert re.fullmatch(r"\d+(\.\d)? ± \d+(\.\d)?", first[MODEL]), first[MODEL]
    assert "suspicion" in first[INFO] and "alice" in first[PROGRESS]
    assert alice.predict("dataset", "", api_name="/next")[SID] == first[SID]  # the held item, not a new one
    suspicion = float(re.search(r"suspicion ([\d.]+)", first[INFO]).group(1))

    after_confirm = alice.predict("dataset", first[SID], api_name="/confirm")
    assert active_votes(store, "alice")[first[SID]] == first[LABEL]
    assert after_confirm[SID] != first[SID] and "Confirmed" in after_confirm[MESSAGE]
    assert float(re.search(r"suspicion ([\d.]+)", after_confirm[INFO]).group(1)) <= suspicion  # worst first
    assert "1 vote here" in after_confirm[PROGRESS]

    second = after_confirm[SID]
    after_correct = alice.predict("dataset", second, 42, api_name="/correct")
    assert active_votes(store, "alice")[second] == 42.0 and "Corrected to 42" in after_correct[MESSAGE]
    vote = store.votes(second)[-1]
    assert (vote.annotator, vote.source, vote.model_version) == ("alice", "fixture", Path(app["options"].model).name)
    assert vote.model_age is not None

    undone = alice.predict("dataset", after_correct[SID], api_name="/undo")
    assert undone[SID] == second and "Undid your vote" in undone[MESSAGE]  # the undone item is back on screen
    assert second not in active_votes(store, "alice")
    assert [v.kind for v in store.votes(second)] == ["vote", "retract"]  # undo appends, never deletes
    third = after_correct[SID]
    assert third not in store.active_claims() or store.active_claims()[third][0] != "alice"  # released

    skipped = alice.predict("dataset", second, api_name="/skip")
    assert skipped[SID] not in (second, "") and "Skipped" in skipped[MESSAGE]
    assert second not in store.active_claims()  # given back for others at once
    assert store.active_claims()[skipped[SID]][0] == "alice"

    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="already voted"):
        alice.predict("dataset", first[SID], api_name="/confirm")
    with pytest.raises(AppError, match="greater than maximum value 120"):
        alice.predict("dataset", skipped[SID], 130, api_name="/correct")


def test_two_annotators_never_share_an_item(alice, bob, store):
    from gradio_client.exceptions import AppError

    mine = alice.predict("dataset", "", api_name="/next")[SID]
    theirs = bob.predict("dataset", "", api_name="/next")[SID]
    assert mine and theirs and mine != theirs
    claims = store.active_claims()
    assert claims[mine][0] == "alice" and claims[theirs][0] == "bob"
    with pytest.raises(AppError, match="alice is reviewing this item"):
        bob.predict("dataset", mine, api_name="/confirm")
    bob.predict("dataset", theirs, 33, api_name="/correct")
    assert active_votes(store, "bob") == {theirs: 33.0} and theirs not in active_votes(store, "alice")


def test_submissions_queue_and_stats(alice, bob, store):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 150, 120)).save(buffer, format="JPEG")
    upload = store.add_upload(buffer.getvalue(), 30, "stakeholder", consent=True, model_age=22.0, model_version="test")
    item = alice.predict("submissions", "", api_name="/next")
    assert item[SID] == upload.sample_id and item[LABEL] == 30.0
    alice.predict("submissions", upload.sample_id, 31, api_name="/correct")
    assert active_votes(store, "alice")[upload.sample_id] == 31.0
    assert bob.predict("submissions", "", api_name="/next")[SID] == ""  # two agreeing votes settled it: nothing left

    summary, annotators, statuses, sources = alice.predict("dataset", api_name="/stats")
    assert "16 items" in summary and "The whole store" in summary
    per = {row[0]: row[1] for row in annotators["data"]}
    assert per["alice"] >= 1 and per["bob"] >= 1
    assert sum(row[1] for row in statuses["data"]) == 16
    by_source = {row[0]: row for row in sources["data"]}
    assert by_source["upload"][1] == 1 and by_source["upload"][5] != "–"  # two annotators on the upload: an alpha


def test_export_writes_a_new_dataset_folder(alice, app):
    import datasets

    text = alice.predict(api_name="/export")
    path = Path(re.search(r"to `([^`]+)`", text).group(1))
    assert path.parent == app["work"] / "exports" and (path / "README.md").is_file()
    assert f"python -m age_model.feedback export {path}" in text
    rows = datasets.load_dataset("parquet", data_files=str(path / "data" / "*.parquet"), split="train")
    sources = rows["source"]
    assert len(rows) >= 3 and {"upload", "fixture"} <= set(sources)
    assert all(
        (image is None) == (source == "fixture") for image, source in zip(rows["image"], sources)
    )  # no UTKFace/FG-NET pixels


def test_scores_are_cached_per_model_beside_the_store(app, tiny_model_dir, fixture_dir):
    from age_model.review_scoring import DatasetReview, ScoreCache
    from age_model.ui.state import AppState

    caches = list((app["work"] / "review_scores").glob("*-cropped.jsonl"))
    assert len(caches) == 1 and len(caches[0].read_text().splitlines()) >= 16
    ScoreCache._open.clear()  # as after a restart: read the file again
    state = AppState.load(str(tiny_model_dir), app["store"])
    review = DatasetReview(
        str(fixture_dir), state.store, state.predictor, app["work"] / "review_scores", state.model, state.model_version
    ).start()
    assert review.wait(30) and review.error is None
    assert review.cached == review.total == 16  # a restart scores nothing again
    review.thread.join(10)
    assert len(caches[0].read_text().splitlines()) == len(set(caches[0].read_text().splitlines()))
    state.store.close()


def test_without_annotators_every_action_refuses(app):
    from gradio_client.exceptions import AppError

    from age_model.ui.server import BackgroundServer, ServerOptions

    options = ServerOptions(model=app["options"].model, store=app["store"], port=free_port())
    with BackgroundServer(options) as url:
        from gradio_client import Client

        anonymous = Client(f"{url}/annotate/", verbose=False, analytics_enabled=False)
        for endpoint, args in (
            ("/next", ["submissions", ""]),
            ("/confirm", ["submissions", "0" * 64]),
            ("/undo", ["submissions", ""]),
            ("/export", []),
        ):
            with pytest.raises(AppError, match="--annotators FILE"):
                anonymous.predict(*args, api_name=endpoint)


def test_scheduled_push_without_the_hub_only_warns(app, store, monkeypatch, caplog):
    import age_model.hub
    from age_model.ui.stats import start_scheduled_push

    monkeypatch.setattr(age_model.hub, "resolve_token", lambda token: "hf_not_a_real_token")  # offline: unreachable
    with caplog.at_level(logging.WARNING, logger="age_model.ui.stats"):
        start_scheduled_push(store, app["work"] / "hub_push", "agecheck/feedback-test", 1).join(30)
    assert "Scheduled push of the feedback dataset to agecheck/feedback-test is OFF" in caplog.text
    assert (app["work"] / "hub_push" / "README.md").is_file()  # the export itself was written


# ----------------------------------------------------------------------------- real browser


def launch(playwright, profile: Path, **kwargs):
    return launch_chromium(playwright, profile, headless=True, viewport={"width": 1280, "height": 900}, **kwargs)


def log_in(page, url: str, user: str) -> None:
    page.goto(f"{url}/annotate/")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(USERS[user])
    page.get_by_role("button", name="Login").click()


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed (apt-get install -y chromium)")
def test_browser_login_correct_with_keyboard_and_see_progress(app, store, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path / "profile")
        try:
            page = context.new_page()
            log_in(page, app["url"], "carol")
            expect(page.locator("#ann_image img")).to_be_visible(timeout=20_000)
            progress = page.locator("#ann_progress")
            expect(progress).to_contain_text("carol: 0 votes here")
            expect(page.locator("#ann_whoami")).to_contain_text("Logged in as carol")
            expect(page.locator("#ann_model textarea")).to_have_value(re.compile(r"± "))
            corrected = re.search(r"sample (\w{12})", page.locator("#ann_info").inner_text()).group(1)
            page.locator("#ann_info").click()  # focus on the page, not in a field
            page.keyboard.press("4")  # a digit jumps into the age box...
            page.keyboard.type("7")
            age = page.locator("#ann_age input[type=number]")
            expect(age).to_have_value("47")
            expect(page.locator("#ann_age_slider input[type=range]")).to_have_value("47")  # kept in sync
            age.press("Enter")  # ...and Enter saves the correction
            expect(page.locator("#ann_message")).to_contain_text("Corrected to 47")
            expect(progress).to_contain_text("carol: 1 vote here")
            assert 47.0 in active_votes(store, "carol").values()
            page.locator("#ann_info").click()
            page.keyboard.press("s")
            expect(page.locator("#ann_message")).to_contain_text("Skipped")
            page.keyboard.press("u")
            expect(page.locator("#ann_message")).to_contain_text("Undid your vote")
            expect(page.locator("#ann_info")).to_contain_text(corrected)  # the undone item is back on screen
            expect(progress).to_contain_text("carol: 0 votes here")
            assert 47.0 not in active_votes(store, "carol").values()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "test_browser_annotate.png"), full_page=True)
            page.get_by_role("tab", name="Stats").click()
            expect(page.locator("#stats_summary")).to_contain_text("The whole store")
            page.locator("#ann_logout").click()
            expect(page.get_by_label("username")).to_be_visible()
        finally:
            context.close()


# runs last: its confirms settle most of the fixture
def test_bulk_grid_through_the_api(bob, store):
    from gradio_client.exceptions import AppError

    cards, ids, _, message = bob.predict("dataset", api_name="/grid")
    on_screen = ids.split(",")
    assert 2 <= len(on_screen) <= 12 and cards.count('class="bulk-card"') == len(on_screen) and "bob" in message
    claims = store.active_claims()
    assert all(claims[i][0] == "bob" for i in on_screen)  # the grid's items are bob's while he looks
    before = active_votes(store, "bob")
    _, _, _, message = bob.predict("dataset", ids, ["1"], api_name="/grid_confirm")
    assert f"Confirmed {len(on_screen) - 1} label" in message
    added = {k: v for k, v in active_votes(store, "bob").items() if k not in before}
    assert set(added) == set(on_screen[1:])  # all but the marked one, each at its label
    assert store.active_claims()[on_screen[0]][0] == "bob"  # the marked one waits for bob on the Annotate tab
    assert bob.predict("dataset", "", api_name="/next")[SID] == on_screen[0]
    with pytest.raises(AppError, match="at most 12"):
        bob.predict("dataset", ",".join(["0" * 64] * 13), [], api_name="/grid_confirm")
