#!/usr/bin/env python
"""Serve agecheck in the browser: the age demo at / and the annotators' review tool at /annotate.

Examples:
  python app.py                                     # the shipped model, http://127.0.0.1:7860
  python app.py --model runs/utk --port 8080        # a model you trained (or a Hub id)
  python app.py --annotators users.txt --review ../shared/data/utkface
"""

import argparse
import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: $AGE_MODEL, else models/agecheck-default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 serves the whole network (default %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    parser.add_argument("--threshold", type=float, default=25.0, help="ID-check age shown by default (default %(default)s)")
    parser.add_argument("--store", default=None, help="feedback store URL: sqlite:///PATH or postgresql://... (default: $AGECHECK_FEEDBACK_STORE, else sqlite:///feedback_data/feedback.db)")
    parser.add_argument("--annotators", metavar="FILE", help="annotator logins, one 'name:password' per line (or $AGECHECK_ANNOTATORS='alice:pw,bob:pw'); without any, /annotate is read-only")
    parser.add_argument("--review", metavar="DATA", help="data set to review in /annotate (any folder train.py reads)")
    parser.add_argument("--examples", metavar="FOLDER", help="folder of example photos (default: examples/)")
    parser.add_argument("--queue-size", type=int, default=32, help="requests waiting at most before new ones are refused (default %(default)s)")
    parser.add_argument("--max-file-size", default="20mb", help="largest upload accepted (default %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: torch's choice; 1 is faster when other work shares the CPU)")
    parser.add_argument("--push-feedback-to", metavar="REPO_ID", help="push the feedback dataset to this Hub dataset repo on a schedule")
    parser.add_argument("--push-every", type=float, default=60.0, metavar="MINUTES", help="minutes between scheduled pushes (default %(default)s)")
    return parser.parse_args(argv)


def read_annotators(path: str | None) -> dict[str, str]:
    """name:password pairs from a file or $AGECHECK_ANNOTATORS; a bad line stops start-up with its number."""
    lines = open(path, encoding="utf-8").read().splitlines() if path else os.environ.get("AGECHECK_ANNOTATORS", "").split(",")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from age_model.ui.server import ServerOptions, serve
    from age_model.ui.state import DEFAULT_STORE, resolve_model

    options = ServerOptions(
        model=resolve_model(args.model), store=args.store or os.environ.get("AGECHECK_FEEDBACK_STORE", DEFAULT_STORE),
        host=args.host, port=args.port, threshold=args.threshold, annotators=read_annotators(args.annotators),
        annotators_file=args.annotators,
        review=args.review, examples=args.examples, queue_size=args.queue_size, max_file_size=args.max_file_size,
        push_feedback_to=args.push_feedback_to, push_every_minutes=args.push_every,
    )
    serve(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
