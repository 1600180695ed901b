"""Command line of the feedback store: ``python -m age_model.feedback --help``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import FeedbackError
from .urls import ENV_URL, default_url


def _open(args: argparse.Namespace, *, create: bool = False) -> Any:
    from .store import FeedbackStore

    return FeedbackStore(args.store, images_dir=args.images_dir, startup_check=False, create=create)


def cmd_export(args: argparse.Namespace) -> int:
    from age_model.publish import export_feedback, push_export  # the CLI may publish; the store does not

    with _open(args) as store:
        result = export_feedback(
            store,
            args.out,
            include_dataset_images=args.include_dataset_images,
            license=args.license,
            overwrite=args.overwrite,
            real_names=args.real_names,
        )
    print(f"wrote {result.num_rows} rows to {result.path}")
    if args.push_to_hub:
        print(f"pushed to {push_export(result.path, args.push_to_hub, private=not args.public)}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .export import feedback_stats

    with _open(args) as store:
        stats = feedback_stats(store)
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return 0
    agree = stats["agreement"]
    print(
        f"samples labelled: {stats['num_samples']} (known: {stats['num_known_samples']}), active votes: "
        f"{stats['num_votes']}, "
        f"vote rows: {stats['num_vote_records']} ({stats['num_retractions']} retractions), exportable rows: "
        f"{stats['num_rows']}"
    )
    for key in ("statuses", "sources", "annotators", "consent"):
        print(f"{key}: " + (", ".join(f"{k}={v}" for k, v in stats[key].items()) or "none"))
    if agree["pairs"]:
        print(
            f"agreement: {agree['pairs']} pairs, mean |diff| {agree['mean_abs_diff']:.2f} y, within 5 y "
            f"{agree['within_5']:.0%}"
        )
    else:
        print("agreement: no sample has two annotators yet")
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.fsck(clean=args.clean, verify=args.verify, grace=args.grace)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.summary())
        for name in ("orphan_files", "temp_files", "missing_images", "corrupt_images", "bad_votes", "removed"):
            for item in getattr(report, name):
                print(f"  {name.replace('_', ' ')[:-1]}: {item}")
    return 0 if report.ok else 1


def _csv_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"sample_id", "age", "annotator"} - set(reader.fieldnames or [])
        if missing:
            raise FeedbackError(f"{path}: missing columns {sorted(missing)} (need sample_id, age, annotator)")
        records = []
        for row in reader:
            rec: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items() if k}
            consent = rec.get("consent")
            if consent is not None:
                rec["consent"] = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
                    consent.lower(), consent
                )
            if rec.get("created_at"):
                rec["created_at"] = datetime.fromisoformat(rec["created_at"])
            records.append(rec)
    return records


def cmd_import_csv(args: argparse.Namespace) -> int:
    records = _csv_records(args.csv)
    with _open(args, create=True) as store:
        if args.register_unknown:
            store.register_samples(
                [{"sample_id": r.get("sample_id"), "source": r.get("source") or args.register_unknown} for r in records]
            )
        allowed = {
            "sample_id",
            "age",
            "annotator",
            "source",
            "previous_label",
            "model_age",
            "model_version",
            "note",
            "consent",
            "created_at",
        }
        votes = store.add_votes([{k: v for k, v in r.items() if k in allowed} for r in records])
    print(f"imported {len(votes)} votes")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    with _open(args) as store:
        vote = store.undo(args.annotator, args.sample)
    print(f"retracted vote {vote.retracts} of {vote.annotator} on {vote.sample_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m age_model.feedback", description="Feedback store: export, stats, consistency check, imports."
    )

    def store_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default=default_url(), help=f"store URL (default: ${ENV_URL} or %(default)s)")
        p.add_argument(
            "--images-dir",
            help="images folder (default: beside a SQLite file; required for PostgreSQL unless in the URL)",
        )

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("export", help="write a Hugging Face dataset folder (parquet + README card)")
    p.add_argument("out", type=Path, help="output folder")
    store_args(p)
    p.add_argument(
        "--include-dataset-images",
        action="store_true",
        help="also ship stored images of third-party data sets (check their licences)",
    )
    p.add_argument("--license", default="agecheck-consent-terms", help="licence named on the card")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "--real-names",
        action="store_true",
        help="keep annotator names in the votes and the card (default: pseudonyms annotator-1, ...)",
    )
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo")
    visibility = p.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private", action="store_true", help="create the Hub repo as private (the default: face photos)"
    )
    visibility.add_argument("--public", action="store_true", help="create the Hub repo as public")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", help="counts, statuses, annotators, agreement, consent")
    store_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("fsck", help="check database and images agree; exit 1 if not")
    store_args(p)
    p.add_argument("--clean", action="store_true", help="delete orphan and temp files older than --grace")
    p.add_argument("--verify", action="store_true", help="re-hash every stored image")
    p.add_argument(
        "--grace", type=float, default=600.0, help="seconds a fresh orphan is left alone (a writer may be committing)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fsck)

    p = sub.add_parser(
        "import-csv",
        help="append votes from a CSV (sample_id, age, annotator[, source, previous_label, model_age, model_version, "
        "note, consent, created_at]); all or nothing",
    )
    p.add_argument("csv", type=Path)
    store_args(p)
    p.add_argument(
        "--register-unknown", metavar="SOURCE", help="register unknown sample ids as samples of this data set"
    )
    p.set_defaults(func=cmd_import_csv)

    p = sub.add_parser("undo", help="retract an annotator's last vote")
    store_args(p)
    p.add_argument("--annotator", required=True)
    p.add_argument("--sample", help="only a vote on this sample id")
    p.set_defaults(func=cmd_undo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FeedbackError, FileNotFoundError, FileExistsError, RuntimeError) as exc:  # RuntimeError: hub.HubError
        print(f"error: {exc}", file=sys.stderr)
        return 2
