"""Serve agecheck in the browser: the age demo at / and the annotators' review tool at /annotate.

Examples:
  agecheck-app                                      # the shipped model, http://127.0.0.1:7860
  agecheck-app --model runs/utk --port 8080         # a model you trained (or a Hub id)
  agecheck-app --annotators users.txt --review ../shared/data/utkface
  (from a clone without `pip install .`: .venv/bin/python app.py ...)

Every option also reads an environment variable, shown in [brackets]; the command line wins, then
AGECHECK_*, then the other names. On a Hugging Face Space (README front matter) the Space sets
GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT, and feedback is kept under /data when the Space
has persistent storage. Set AGECHECK_ANNOTATORS='alice:pw,bob:pw' as a Space secret for annotator
logins, or list Hugging Face user names in AGECHECK_HF_ANNOTATORS to let them sign in with their
Hugging Face account (needs `hf_oauth: true` in the front matter).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Mapping

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from age_model.feedback.urls import DEFAULT_URL, default_url  # noqa: E402  (after the environment defaults)

ENV_PREFIX = "AGECHECK_"
# Names other tools already use for an option; AGECHECK_<OPTION> is always read first.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "host": ("GRADIO_SERVER_NAME",),
    "port": ("GRADIO_SERVER_PORT",),
    "model": ("AGE_MODEL",),
    "store": ("AGECHECK_FEEDBACK_STORE",),
}
# AGECHECK_ANNOTATORS holds the logins themselves ('alice:pw,bob:pw'), so the file option reads another name.
ENV_NAME_OVERRIDES = {"annotators": "AGECHECK_ANNOTATORS_FILE"}


def env_names(dest: str) -> tuple[str, ...]:
    """The environment variables an option reads, in order of precedence."""
    return (ENV_NAME_OVERRIDES.get(dest, f"{ENV_PREFIX}{dest.upper()}"), *ENV_ALIASES.get(dest, ()))


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="agecheck-app",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--model", help="model folder or Hub id (default: the shipped models/agecheck-default)")
    add(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 serves the whole network (default %(default)s)",
    )
    add("--port", type=int, default=7860, help="port (default %(default)s)")
    add("--threshold", type=float, default=25.0, help="ID-check age shown by default (default %(default)s)")
    add(
        "--store",
        default=None,
        help="feedback store URL: sqlite:///PATH or postgresql://... "
        f"(default: {DEFAULT_URL}, or under /data on a Space with persistent storage)",
    )
    add(
        "--annotators",
        metavar="FILE",
        help="annotator logins, one 'name:password' per line (or "
        "$AGECHECK_ANNOTATORS='alice:pw,bob:pw'); without any, /annotate is read-only",
    )
    add(
        "--hf-annotators",
        metavar="NAMES",
        help="Hugging Face user names (comma-separated) allowed to annotate after "
        "signing in with Hugging Face; on a Space with hf_oauth only",
    )
    add("--review", metavar="DATA", help="data set to review in /annotate (any folder train.py reads)")
    add("--examples", metavar="FOLDER", help="folder of example photos (default: the shipped examples)")
    add(
        "--queue-size",
        type=int,
        default=32,
        help="requests waiting at most before new ones are refused (default %(default)s)",
    )
    add("--max-file-size", default="20mb", help="largest upload accepted (default %(default)s)")
    add(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the model (default: torch's choice; 1 is faster when other work shares the CPU)",
    )
    add(
        "--push-feedback-to", metavar="REPO_ID", help="push the feedback dataset to this Hub dataset repo on a schedule"
    )
    add(
        "--push-every",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="minutes between scheduled pushes (default %(default)s)",
    )
    for action in parser._actions:
        if action.dest != "help":
            action.help = f"{action.help} [{' or '.join(env_names(action.dest))}]"
    return parser


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Command line first, then the environment forms of each option, then the defaults."""
    parser = build_parser()
    environ = os.environ if environ is None else environ
    for action in parser._actions:
        if action.dest == "help":
            continue
        name = next((n for n in env_names(action.dest) if environ.get(n, "").strip()), None)
        if name is None:
            continue
        value = environ[name].strip()
        try:
            action.default = action.type(value) if action.type else value
        except ValueError:
            parser.error(f"${name}={value!r} is not a valid value for {action.option_strings[0]}")
    return parser.parse_args(argv)


def read_annotators(path: str | None) -> dict[str, str]:
    """name:password pairs from a file or $AGECHECK_ANNOTATORS; a bad line stops start-up with its number."""
    lines = (
        Path(path).read_text(encoding="utf-8").splitlines()
        if path
        else os.environ.get("AGECHECK_ANNOTATORS", "").split(",")
    )
    users = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name.strip() or not password:
            raise SystemExit(f"annotators {path or '$AGECHECK_ANNOTATORS'}, line {number}: expected 'name:password'")
        users[name.strip()] = password
    return users


def hf_annotators(names: str | None) -> tuple[str, ...]:
    """Hugging Face user names allowed to annotate through the Space's OAuth sign-in."""
    return tuple(name.strip() for name in (names or "").split(",") if name.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hf_annotators:
        from age_model.ui.hf_login import HfLoginError, check_available

        try:
            check_available()
        except HfLoginError as error:
            raise SystemExit(f"agecheck-app: {error}") from None
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from age_model.resources import default_model
    from age_model.ui.server import ServerOptions, serve

    options = ServerOptions(
        model=args.model or default_model(),
        store=args.store or default_url(),
        host=args.host,
        port=args.port,
        threshold=args.threshold,
        annotators=read_annotators(args.annotators),
        annotators_file=args.annotators,
        hf_annotators=hf_annotators(args.hf_annotators),
        review=args.review,
        examples=args.examples,
        queue_size=args.queue_size,
        max_file_size=args.max_file_size,
        push_feedback_to=args.push_feedback_to,
        push_every_minutes=args.push_every,
    )
    serve(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
