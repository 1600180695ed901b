"""The app starts as a Hugging Face Space starts it: `python app.py` with the Space's environment and no options.

The Space sets GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT; agecheck's own options have
AGECHECK_* forms. The start test reads the kernel's table of listening sockets for the address.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from age_model import app
from tests.app_support import REPO_ROOT, free_port

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (the kernel's own view)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == LISTEN and int(port_hex, 16) == port:
            addresses.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return addresses


def start_like_a_space(tmp_path: Path, environment: dict[str, str], port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGECHECK_", "GRADIO_SERVER_"))}
    env.update(environment, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "app.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(process.communicate()[0].decode(errors="replace")[-3000:])


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
@pytest.mark.parametrize("space", [True, False], ids=["space", "local"])
def test_app_listens_where_the_environment_says(tiny_model_dir: Path, tmp_path: Path, space: bool):
    port = free_port()
    store = tmp_path / "store" / "feedback.db"
    environment = {
        "AGECHECK_MODEL": str(tiny_model_dir),
        "AGECHECK_STORE": f"sqlite:///{store}",
        "AGECHECK_THRESHOLD": "21",
    }
    if space:
        environment.update(
            GRADIO_SERVER_NAME="0.0.0.0",
            GRADIO_SERVER_PORT=str(port),
            SPACE_ID="someone/agecheck",
            SPACE_HOST="someone-agecheck.hf.space",
            SYSTEM="spaces",
        )
    else:
        environment["AGECHECK_PORT"] = str(port)
    process = start_like_a_space(tmp_path, environment, port)
    try:
        assert listening_addresses(port) == ({"0.0.0.0"} if space else {"127.0.0.1"})
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
        assert health["status"] == "ok"
        page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10, follow_redirects=True).text
        assert "Challenge-21" in page  # AGECHECK_THRESHOLD reached the page
        assert store.is_file()  # AGECHECK_STORE was used
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert re.search(rf"agecheck on http://{'0.0.0.0' if space else '127.0.0.1'}:{port}\b", output), output[-2000:]


def test_every_option_has_an_environment_form():
    parser = app.build_parser()
    options = [a for a in parser._actions if a.dest != "help"]
    assert options
    for action in options:
        assert app.env_names(action.dest)[0].startswith("AGECHECK_")
        assert app.env_names(action.dest)[0] in action.help


def test_command_line_beats_agecheck_env_beats_gradio_env():
    env = {
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": "7000",
        "AGECHECK_PORT": "7100",
        "AGECHECK_QUEUE_SIZE": "5",
        "AGECHECK_PUSH_EVERY": "2.5",
        "AGE_MODEL": "org/model",
    }
    args = app.parse_args([], env)
    assert (args.host, args.port, args.queue_size, args.push_every, args.model) == (
        "0.0.0.0",
        7100,
        5,
        2.5,
        "org/model",
    )
    args = app.parse_args(["--port", "8000", "--host", "127.0.0.1"], env)
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert app.parse_args([], {}).host == "127.0.0.1"


def test_a_bad_environment_value_names_the_variable(capsys):
    with pytest.raises(SystemExit):
        app.parse_args([], {"GRADIO_SERVER_PORT": "seven"})
    assert "$GRADIO_SERVER_PORT='seven'" in capsys.readouterr().err


def test_feedback_is_kept_under_persistent_storage_when_there_is_some(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from age_model.feedback.urls import DEFAULT_URL, ENV_URL, default_url

    monkeypatch.delenv(ENV_URL, raising=False)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path}/agecheck/feedback.db"
    assert default_url(tmp_path / "missing") == DEFAULT_URL
    monkeypatch.setenv(ENV_URL, "sqlite:///elsewhere.db")
    assert default_url(tmp_path) == "sqlite:///elsewhere.db"
