"""Annotators signing in with Hugging Face on a Space: the allow-list decides who reaches /annotate.

The Space's environment is set as a Space sets it with `hf_oauth: true`; the signed-in session is the
cookie Gradio's OAuth callback would have stored (signed with the same key), so no request leaves the
machine. The app, its middleware and Gradio's routes are the real ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from base64 import b64encode
from pathlib import Path

import itsdangerous
import pytest
from fastapi.testclient import TestClient
from gradio import oauth

from age_model.ui.hf_login import HfLoginError
from age_model.ui.server import ServerOptions, create_app

SECRET = "space-oauth-secret"


@pytest.fixture
def on_a_space(monkeypatch: pytest.MonkeyPatch) -> None:
    space = {
        "SYSTEM": "spaces",
        "SPACE_ID": "someone/agecheck",
        "SPACE_HOST": "someone-agecheck.hf.space",
        "OAUTH_CLIENT_ID": "client-id",
        "OAUTH_CLIENT_SECRET": SECRET,
        "OAUTH_SCOPES": "openid profile",
        "OPENID_PROVIDER_URL": "https://huggingface.co",
    }
    for name, value in space.items():
        monkeypatch.setenv(name, value)
        if hasattr(oauth, name):  # gradio.oauth reads these when it is imported
            monkeypatch.setattr(oauth, name, value)


def signed_in_as(name: str) -> dict[str, str]:
    """The session cookie of a Hugging Face sign-in, as Gradio's /login/callback stores it."""
    session = {
        "oauth_info": {
            "userinfo": {"preferred_username": name, "name": name},
            "access_token": "hf_oauth",
            "scope": "openid profile",
            "expires_at": int(time.time()) + 3600,
        }
    }
    signer = itsdangerous.TimestampSigner(hashlib.sha256(f"{SECRET}-v4".encode()).hexdigest())
    return {"session": signer.sign(b64encode(json.dumps(session).encode())).decode()}


@pytest.fixture
def space_app(on_a_space, tiny_model_dir: Path, tmp_path: Path):
    options = ServerOptions(
        model=str(tiny_model_dir), store=f"sqlite:///{tmp_path / 'fb.db'}", hf_annotators=("Alice",)
    )
    with TestClient(create_app(options), base_url="https://someone-agecheck.hf.space") as client:
        yield client


def test_listed_hugging_face_user_reaches_annotate_as_themselves(space_app: TestClient):
    page = space_app.get("/annotate/", cookies=signed_in_as("alice"))
    assert page.status_code == 200
    assert space_app.get("/annotate/gradio_api/user", cookies=signed_in_as("alice")).json() == "alice"


def test_others_are_sent_to_sign_in_or_refused(space_app: TestClient):
    anonymous = space_app.get("/annotate/", follow_redirects=False)
    assert anonymous.status_code in (302, 307) and anonymous.headers["location"].startswith("/login/huggingface")
    stranger = space_app.get("/annotate/", cookies=signed_in_as("mallory"), follow_redirects=False)
    assert stranger.status_code == 403 and "mallory" in stranger.text
    for cookies in ({}, signed_in_as("mallory")):
        assert space_app.get("/annotate/config", cookies=cookies).status_code == 401
        assert space_app.get("/annotate/gradio_api/user", cookies=cookies).json() is None
        join = space_app.post(
            "/annotate/gradio_api/queue/join", cookies=cookies, json={"data": [], "fn_index": 0, "session_hash": "x"}
        )
        assert join.status_code == 401  # the annotators' API is closed too, not only the page


def test_public_page_offers_the_sign_in(space_app: TestClient):
    config = space_app.get("/config").json()
    buttons = [c for c in config["components"] if c.get("type") == "button"]
    assert any(c["props"].get("value") == "Annotators: sign in with Hugging Face" for c in buttons)  # gr.LoginButton
    routes = {getattr(route, "path", None) for route in space_app.app.routes}
    assert {"/login/huggingface", "/login/callback", "/logout"} <= routes  # Gradio's OAuth routes, at the root


def test_hugging_face_sign_in_off_a_space_says_why(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("SYSTEM", raising=False)
    options = ServerOptions(
        model=str(tiny_model_dir), store=f"sqlite:///{tmp_path / 'fb.db'}", hf_annotators=("alice",)
    )
    with pytest.raises(HfLoginError, match="Space only"):
        create_app(options)


def test_passwords_and_hugging_face_sign_in_are_not_mixed(on_a_space, tiny_model_dir: Path, tmp_path: Path):
    options = ServerOptions(
        model=str(tiny_model_dir),
        store=f"sqlite:///{tmp_path / 'fb.db'}",
        hf_annotators=("alice",),
        annotators={"bob": "pw"},
    )
    with pytest.raises(HfLoginError, match="not both"):
        create_app(options)
