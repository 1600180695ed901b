"""Publish a trained age model and the feedback dataset to the Hugging Face Hub, each with its card.

Both pushes first stage exactly the files that go up, then create the repo (private unless asked
otherwise: faces are personal data) and upload the staged folder in one commit. ``--dry-run OUT``
stops after staging into OUT, so what you inspect is what would be uploaded. Without a token, or
when the Hub cannot be reached, the CLI prints one message saying what happened and what to do,
and exits with code 2; nothing leaves the machine.

    python -m age_model.hub push-model RUN_DIR --repo-id ORG/NAME
        [--private | --public] [--dry-run OUT_DIR] [--token TOKEN]
    python -m age_model.hub push-feedback EXPORT_DIR --repo-id ORG/NAME
        [--private | --public] [--dry-run OUT_DIR] [--token TOKEN]

The token comes from --token, else HF_TOKEN, else the login cache written by `hf auth login`
(`huggingface-cli login` in older huggingface_hub releases).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import CommitScheduler, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from age_model.cards import model_card_for_run, render_feedback_card

EXIT_HUB = 2
MODEL_FILES = ("config.json", "preprocessor_config.json")
RUN_RECORDS = (
    "test_metrics.json",
    "eval_metrics.json",
    "data_summary.json",
)  # copied when present: the card's evidence
WEIGHT_GLOBS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".csv")
# Never published from a feedback folder: the live store, its journals, locks and half-written files.
LOCAL_ONLY_PATTERNS = [".*", "*.db", "*.db-*", "*.sqlite", "*.sqlite3", "*.sqlite-*", "*.lock", "*.tmp", "*.part"]
LOGIN_HINT = (
    "Log in once with `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN to a "
    "write token, then try again."
)


class HubError(RuntimeError):
    """The Hub could not take the upload (no token, offline, unreachable, refused); the message says what to do."""


# ---------------------------------------------------------------- staging


def model_files(run_dir: Path) -> list[Path]:
    """The files a model repo needs from a run folder: config, processor, safetensors weights, nothing else."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder. Give the output folder of train.py.")
    missing = [name for name in MODEL_FILES if not (run_dir / name).exists()]
    weights = sorted({p for pattern in WEIGHT_GLOBS for p in run_dir.glob(pattern)})
    if missing or not weights:
        missing += [] if weights else ["model.safetensors"]
        raise FileNotFoundError(
            f"{run_dir} lacks {', '.join(missing)}: it does not look like a trained model written by train.py."
        )
    return [run_dir / name for name in MODEL_FILES] + weights


def empty_folder(folder: Path) -> Path:
    """A new or empty folder, so the staged copy holds exactly what would be uploaded."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; give a new or empty --dry-run folder.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stage_model(run_dir: Path, folder: Path, repo_id: str | None = None, fp16: bool = False) -> Path:
    """Copy the model files (and the run's metric records) into ``folder`` with a README.md card
    regenerated from the run's metrics; ``fp16`` halves the weights (what the repo ships in models/)."""
    files = model_files(run_dir) + [run_dir / name for name in RUN_RECORDS if (run_dir / name).is_file()]
    empty_folder(folder)
    for path in files:
        if fp16 and path.suffix == ".safetensors":
            halve_safetensors(path, folder / path.name)
        else:
            shutil.copy2(path, folder / path.name)
    model_card_for_run(run_dir, hub_model_id=repo_id).save(folder / "README.md")
    return folder


def halve_safetensors(source: Path, target: Path) -> None:
    """fp32 weights to fp16 (other dtypes kept); loading casts back with `dtype=torch.float32`."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(str(source)).items()}
    save_file(tensors, str(target), metadata={"format": "pt"})


def data_files(export_dir: Path) -> list[Path]:
    return sorted(
        p for p in export_dir.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES and not p.name.startswith(".")
    )


def export_stats(export_dir: Path) -> dict[str, int]:
    """What can be said about an export that came without its card: how many rows its parquet files hold."""
    import pyarrow.parquet as pq

    parquet = [p for p in data_files(export_dir) if p.suffix == ".parquet"]
    return {"num_rows": sum(pq.ParquetFile(p).metadata.num_rows for p in parquet)} if parquet else {}


def stage_feedback(export_dir: Path, folder: Path) -> Path:
    """Copy a feedback export (minus local-only files) into ``folder``; render a card if it has none."""
    if not export_dir.is_dir():
        raise FileNotFoundError(f"{export_dir} is not a folder. Give a feedback export folder.")
    if not data_files(export_dir):
        raise FileNotFoundError(
            f"{export_dir} holds no data files ({', '.join(DATA_SUFFIXES)}): is it a feedback export?"
        )
    empty_folder(folder)
    shutil.copytree(export_dir, folder, ignore=shutil.ignore_patterns(*LOCAL_ONLY_PATTERNS), dirs_exist_ok=True)
    if not (folder / "README.md").exists():
        render_feedback_card(export_stats(export_dir)).save(folder / "README.md")
    return folder


# ---------------------------------------------------------------- talking to the Hub


def hub_failure(error: BaseException | None, action: str, local: Path, dry_run_hint: bool = True) -> HubError:
    """One message: what went wrong, that everything stayed local (and where), and what to do."""
    reason, fix = diagnose(error)
    hint = " To see exactly what would be uploaded, add --dry-run OUT_DIR." if dry_run_hint else ""
    return HubError(
        f"Could not {action}: {reason}.\n"
        f"No files were uploaded; everything stays local in {local.resolve()}.\n"
        f"{fix}{hint}"
    )


def diagnose(error: BaseException | None) -> tuple[str, str]:
    """(reason, fix) for the ways a push fails before or while talking to the Hub."""
    if error is None:
        return "no Hugging Face token was found (no --token, no HF_TOKEN, no saved login)", LOGIN_HINT
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so huggingface_hub does not go online", "Unset HF_HUB_OFFLINE and try again."
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HfHubHTTPError) and status == 401:
        return "the Hub rejected the token (HTTP 401)", LOGIN_HINT
    if isinstance(error, HfHubHTTPError) and status == 403:
        return "the token may not write to that user or organisation (HTTP 403)", (
            "Use a token with write access to it (`hf auth login` again, or HF_TOKEN), then try again."
        )
    if isinstance(error, HfHubHTTPError):
        return (
            f"the Hub answered HTTP {status}: {str(error).splitlines()[0]}",
            "Check the repo id, then try again later.",
        )
    first_line = (str(error).splitlines() or [""])[0]
    return (
        f"the Hugging Face Hub could not be reached ({type(error).__name__}: {first_line})",
        "Check the network connection (and HTTPS_PROXY), then try again.",
    )


def resolve_token(token: str | None) -> str | None:
    """--token, else HF_TOKEN, else the saved login."""
    return token or get_token()


def upload(
    stage: Callable[[Path], Path],
    repo_id: str,
    repo_type: str,
    *,
    private: bool,
    token: str | None,
    api: HfApi | None,
    local: Path,
    what: str,
) -> str:
    """Stage into a temporary folder, create the repo (existing repos keep their visibility), upload in one commit."""
    action = f"push the {what} to {repo_id}"
    token = resolve_token(token)
    if not token:
        raise hub_failure(None, action, local)
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="agecheck-push-") as tmp:
        folder = stage(Path(tmp) / "upload")
        try:
            repo_url = api.create_repo(repo_id, token=token, private=private, repo_type=repo_type, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                repo_type=repo_type,
                token=token,
                commit_message=f"Upload agecheck {what} from {local.name}",
            )
        except (HTTPError, OSError) as error:
            raise hub_failure(error, action, local) from error
    return str(getattr(commit, "commit_url", None) or repo_url)


def push_model(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    dry_run: str | Path | None = None,
    api: HfApi | None = None,
    fp16: bool = False,
) -> str:
    """Push a train.py run (weights, config, processor, regenerated card); with ``dry_run``, only write that folder.

    Returns the commit URL, or the dry-run folder. Raises FileNotFoundError for a folder that is no
    train.py run, FileExistsError for a non-empty dry-run folder, and HubError (what to do, nothing
    pushed) without a token or when the Hub refuses or cannot be reached.
    """
    run_dir = Path(run_dir)
    validate_repo_id(repo_id)
    if dry_run is not None:
        return str(stage_model(run_dir, Path(dry_run), repo_id, fp16))
    model_files(run_dir)  # fail on a wrong folder before asking for a token
    return upload(
        lambda folder: stage_model(run_dir, folder, repo_id, fp16),
        repo_id,
        "model",
        private=private,
        token=token,
        api=api,
        local=run_dir,
        what="model",
    )


def push_feedback(
    export_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    dry_run: str | Path | None = None,
    api: HfApi | None = None,
) -> str:
    """Push a feedback export folder (with its card) as a dataset repo; with ``dry_run``, only write that folder.

    Raises FileNotFoundError for a folder that is no export, HubError without a token or when the Hub
    refuses or cannot be reached (nothing pushed)."""
    export_dir = Path(export_dir)
    validate_repo_id(repo_id)
    if dry_run is not None:
        return str(stage_feedback(export_dir, Path(dry_run)))
    return upload(
        lambda folder: stage_feedback(export_dir, folder),
        repo_id,
        "dataset",
        private=private,
        token=token,
        api=api,
        local=export_dir,
        what="feedback dataset",
    )


def make_feedback_scheduler(
    folder: str | Path,
    repo_id: str,
    every_minutes: float = 10,
    *,
    private: bool = True,
    token: str | None = None,
    hf_api: HfApi | None = None,
) -> CommitScheduler:
    """A CommitScheduler that pushes ``folder`` to the dataset repo ``repo_id`` every ``every_minutes``.

    It creates the (private) repo now, then commits every file that changed since its last commit,
    on a background thread and once more at exit. Writers into ``folder`` must:

    - hold ``scheduler.lock`` while writing (``with scheduler.lock: path.open("a").write(...)``), so a
      commit never lists the folder halfway through a write;
    - keep files append-only: add new files or append to existing ones (JSONL, image files named by
      their hash), never rewrite or delete. The scheduler uploads each file up to the size it saw and
      never deletes anything on the Hub.

    The live SQLite store does not belong in ``folder`` (``*.db``, journals and locks are ignored anyway).
    Call ``scheduler.stop()`` on shutdown. Raises HubError without a token or when the Hub is unreachable.
    """
    folder = Path(folder)
    token = resolve_token(token)
    action = f"schedule pushes of {folder} to {repo_id}"
    if hf_api is None and not token:
        raise hub_failure(None, action, folder, dry_run_hint=False)
    try:
        return CommitScheduler(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            every=every_minutes,
            private=private,
            token=token,
            ignore_patterns=list(LOCAL_ONLY_PATTERNS),
            hf_api=hf_api,
        )
    except (HTTPError, OSError) as error:
        raise hub_failure(error, action, folder, dry_run_hint=False) from error


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m age_model.hub", description="Push agecheck models and feedback to the Hugging Face Hub."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, source, help_text in (
        ("push-model", "run_dir", "a train.py output folder (weights, config, processor, metrics JSON)"),
        ("push-feedback", "export_dir", "a feedback export folder (data files and README.md card)"),
    ):
        command = commands.add_parser(name, help=f"push {help_text}")
        command.add_argument(source, type=Path, help=help_text)
        command.add_argument("--repo-id", required=True, help="ORG/NAME (or NAME for your own namespace)")
        visibility = command.add_mutually_exclusive_group()
        visibility.add_argument(
            "--private", dest="private", action="store_true", default=True, help="create the repo private (default)"
        )
        visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")
        command.add_argument(
            "--dry-run",
            type=Path,
            metavar="OUT_DIR",
            help="write the folder that would be uploaded into OUT_DIR; upload nothing",
        )
        command.add_argument(
            "--token", help="Hub token (default: HF_TOKEN, then `hf auth login`); visible in shell history"
        )
    commands.choices["push-model"].add_argument(
        "--fp16", action="store_true", help="store the weights in fp16 (half the size; loads back as fp32)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    push, source = (push_model, args.run_dir) if args.command == "push-model" else (push_feedback, args.export_dir)
    extra = {"fp16": args.fp16} if args.command == "push-model" else {}
    try:
        result = push(source, args.repo_id, private=args.private, token=args.token, dry_run=args.dry_run, **extra)
    except HubError as error:
        print(error, file=sys.stderr)
        return EXIT_HUB
    except (OSError, ValueError) as error:  # a wrong folder or repo id: say which, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.dry_run is not None:
        files = sorted(str(p.relative_to(result)) for p in Path(result).rglob("*") if p.is_file())
        print(f"Dry run: {len(files)} files that {args.command} would upload to {args.repo_id} are in {result}:")
        print("\n".join(f"  {name}" for name in files))
    else:
        print(f"Pushed to {args.repo_id} ({'private' if args.private else 'public'} if newly created): {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
