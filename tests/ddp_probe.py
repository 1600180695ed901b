"""Run under torchrun by tests/test_distributed.py: train.py's main, with its outside effects recorded per rank.

Recorded in ``$AGECHECK_PROBE_LOG/rank-N.jsonl``: every file opened for writing under the output
folder, every face detection and crop calibration, and every call that reaches the Hub's HTTP client boundary
(``huggingface_hub.HfApi.create_repo`` / ``upload_folder``, answered locally: nothing leaves the machine).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub

RANK = int(os.environ.get("RANK", 0))
LOG = Path(os.environ["AGECHECK_PROBE_LOG"]) / f"rank-{RANK}.jsonl"


def record(kind: str, **data: object) -> None:
    with LOG.open("a", encoding="utf-8") as handle:  # bound before the patch below: not recorded itself
        handle.write(json.dumps({"rank": RANK, "kind": kind, **data}, default=str) + "\n")


def watch_writes(output_dir: Path) -> None:
    real_open = io.open

    def open_and_record(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202 (open's signature)
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            path = Path(file).resolve()
            if path.is_relative_to(output_dir):
                record("write", path=str(path.relative_to(output_dir)))
        return real_open(file, mode, *args, **kwargs)

    io.open = builtins.open = open_and_record


def fake_hub() -> None:
    def create_repo(self, repo_id, **kwargs):  # noqa: ANN001, ANN202
        record("hub.create_repo", repo_id=repo_id)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):  # noqa: ANN001, ANN202
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        record("hub.upload_folder", repo_id=repo_id, files=files)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")

    huggingface_hub.HfApi.create_repo = create_repo
    huggingface_hub.HfApi.upload_folder = upload_folder


def count_face_detection() -> None:
    import age_model.training as training

    detect = training.largest_face_crop

    def detect_and_record(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        record("detect")
        return detect(*args, **kwargs)

    training.largest_face_crop = detect_and_record

    calibrate = training.calibrate_crop

    def calibrate_and_record(chips, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        record("calibrate", chips=len(chips))
        return calibrate(chips, *args, **kwargs)

    training.calibrate_crop = calibrate_and_record


if __name__ == "__main__":
    argv = sys.argv[1:]
    watch_writes(Path(argv[argv.index("--output-dir") + 1]).resolve())
    fake_hub()
    count_face_detection()
    from age_model.train_cli import main

    sys.exit(main(argv))
