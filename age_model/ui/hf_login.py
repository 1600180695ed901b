"""Annotators sign in with their Hugging Face account on a Space (`--hf-annotators alice,bob`).

The Space's OAuth app (`hf_oauth: true` in the README's front matter) and Gradio's own OAuth routes,
session cookie and `gr.LoginButton` do the signing in; agecheck adds only the allow-list: a signed-in
Hugging Face user named in it reaches /annotate as that name (`gr.Request.username`), anyone else is
sent to sign in (not signed in) or refused (signed in, not listed). Password logins (`--annotators`)
are the way everywhere else.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Request
from gradio import oauth
from gradio.utils import get_space
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

ANNOTATE_PAGE = "/annotate/"
LOGIN = "/login/huggingface"
# What the Space sets when its README front matter has `hf_oauth: true`.
OAUTH_VARIABLES = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL")


class HfLoginError(ValueError):
    """Hugging Face sign-in was asked for where it cannot work."""


def check_available() -> None:
    """Raise HfLoginError saying what is missing unless this runs on a Space with OAuth enabled."""
    if get_space() is None:
        raise HfLoginError(
            "--hf-annotators (AGECHECK_HF_ANNOTATORS) works on a Hugging Face Space only; elsewhere "
            "give annotators passwords with --annotators FILE or AGECHECK_ANNOTATORS='alice:pw'."
        )
    missing = [name for name in OAUTH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise HfLoginError(
            f"--hf-annotators needs the Space's OAuth app: add `hf_oauth: true` to the README's front "
            f"matter ({', '.join(missing)} not set)."
        )


def signed_in_name(request: Request) -> str | None:
    """The Hugging Face user name of a valid (unexpired) sign-in in this request's session, if any."""
    session = request.scope.get("session")
    info = oauth._get_valid_oauth_info_from_session(session) if session is not None else None
    return (info or {}).get("userinfo", {}).get("preferred_username") or None


def annotator_dependency(allowed: Iterable[str]) -> Callable[[Request], str | None]:
    """Gradio's `auth_dependency` for /annotate: the signed-in name if it is on the allow-list, else None (401)."""
    names = {name.lower() for name in allowed}

    def annotator(request: Request) -> str | None:
        name = signed_in_name(request)
        return name if name and name.lower() in names else None

    return annotator


class SignInFirst:
    """Send a browser that opens /annotate without an allowed sign-in to the sign-in, or say why it may not enter.

    Only the page itself is answered here; Gradio refuses its API calls through the dependency above.
    """

    def __init__(self, app: ASGIApp, annotator: Callable[[Request], str | None]) -> None:
        self.app, self.annotator = app, annotator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == ANNOTATE_PAGE:
            request = Request(scope, receive)
            if self.annotator(request) is None:
                name = signed_in_name(request)
                if name is None:
                    response = RedirectResponse(f"{LOGIN}?_target_url={ANNOTATE_PAGE}")
                else:
                    response = HTMLResponse(
                        f"<p>Signed in to Hugging Face as <b>{html.escape(name)}</b>, who is not one of this Space's "
                        f"annotators. Ask its owner to add you to AGECHECK_HF_ANNOTATORS, or "
                        f"<a href='/logout?_target_url=/'>sign out</a>.</p>",
                        status_code=403,
                    )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def enable(app: FastAPI, allowed: Iterable[str]) -> Callable[[Request], str | None]:
    """Add Gradio's OAuth routes and session to the whole app; returns the /annotate auth dependency."""
    check_available()
    annotator = annotator_dependency(allowed)
    app.add_middleware(SignInFirst, annotator=annotator)  # added first: runs inside the session middleware
    oauth.attach_oauth(app)
    return annotator
