"""CLI: regenerate the committed data cards (see the package docstring for the commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from age_model.cards.dataset_card import render_dataset_card
from age_model.cards.render import KNOWN_DATASETS, SHARED_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m age_model.cards", description="Render agecheck's cards from their data."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser(
        "dataset-card", help="dataset card of a training source, computed from its label file"
    )
    dataset.add_argument("name", choices=sorted(KNOWN_DATASETS))
    dataset.add_argument(
        "--labels", type=Path, help="label CSV (default: the shared copy, e.g. ../shared/data/utkface/labels.csv)"
    )
    dataset.add_argument("--out", type=Path, help="write here instead of printing (e.g. data_cards/utkface.md)")
    args = parser.parse_args(argv)

    labels = args.labels or SHARED_DIR / KNOWN_DATASETS[args.name].labels
    if not labels.exists():
        print(f"Label file not found: {labels}. Pass --labels PATH.", file=sys.stderr)
        return 1
    text = str(render_dataset_card(args.name, labels))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
