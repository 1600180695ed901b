"""Training in several processes: one card, one metrics set, one push; metrics over every rank's share;
augmentation drawn differently per DataLoader worker, rank and epoch; precision flags honoured.

The torchrun test runs two CPU processes over gloo, as `torchrun --nproc-per-node 2 train.py` would on
two GPUs, on a tiny random model; tests/ddp_probe.py records each rank's file writes, face detections
and calls at the `HfApi` boundary.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from age_model.training import AgeTrainingArguments, FaceTransform, resolve_precision
from tests.conftest import REPO_ROOT, make_tiny_model

CARD_AND_METRICS = {
    "README.md",
    "test_metrics.json",
    "eval_metrics.json",
    "data_summary.json",
    "training_options.json",
    "config.json",
}


def split_fixture(fixture_dir: Path, folder: Path, source: str) -> Path:
    """One source of the fixture (its 8 images) with an explicit 4/2/2 split, so that validation and test of the
    two sources together are shared out over both ranks."""
    rows = [r for r in csv.DictReader((fixture_dir / "labels.csv").open(encoding="utf-8")) if r["source"] == source]
    folder.mkdir()
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "real_age", "split"])
        for i, row in enumerate(rows):
            split = "train" if i % 4 < 2 else "valid" if i % 4 == 2 else "test"
            writer.writerow([str(fixture_dir / "images" / row["file_name"]), row["real_age"], split])
    return folder


def test_torchrun_two_processes_write_and_push_once(tmp_path: Path, fixture_dir: Path):
    # UTKFace chips first (the framing reference: crop calibration), FG-NET photos second (re-cut by the detector).
    chips = split_fixture(fixture_dir, tmp_path / "utk", "utkface")
    photos = split_fixture(fixture_dir, tmp_path / "fgnet", "fgnet")
    base = make_tiny_model(tmp_path / "base", image_size=32)
    out, log = tmp_path / "run", tmp_path / "log"
    log.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": "hf_fake",
        "AGECHECK_PROBE_LOG": str(log),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO_ROOT / "tests" / "ddp_probe.py"),
        "--data",
        str(chips),
        "--data",
        str(photos),
        "--base-model",
        str(base),
        "--output-dir",
        str(out),
        "--image-size",
        "32",
        "--per-device-train-batch-size",
        "2",
        "--per-device-eval-batch-size",
        "1",
        "--max-steps",
        "4",
        "--eval-strategy",
        "steps",
        "--save-strategy",
        "steps",
        "--eval-steps",
        "2",
        "--save-steps",
        "2",
        "--logging-steps",
        "1",
        "--disable-tqdm",
        "true",
        "--seed",
        "1",
        "--fp16",
        "False",
        "--bf16",
        "False",
        "--report-to",
        "none",
        "--push-to-hub",
        "--hub-model-id",
        "someone/agecheck-ddp",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    events = [json.loads(line) for path in sorted(log.glob("rank-*.jsonl")) for line in path.read_text().splitlines()]
    by_rank = {rank: [e for e in events if e["rank"] == rank] for rank in (0, 1)}
    writes = {rank: Counter(e["path"] for e in evs if e["kind"] == "write") for rank, evs in by_rank.items()}
    assert not writes[1], f"rank 1 wrote {sorted(writes[1])}"
    assert all(writes[0][name] == 1 for name in CARD_AND_METRICS), writes[0]

    pushes = [e for e in events if e["kind"] == "hub.upload_folder"]
    assert len(pushes) == 1 and pushes[0]["rank"] == 0, pushes
    assert {"README.md", "model.safetensors", "test_metrics.json"} <= set(pushes[0]["files"])

    detections = Counter(e["rank"] for e in events if e["kind"] == "detect")
    assert detections[1] == 0 and detections[0] == 8, detections  # the photos cropped once, by the main process
    calibrations = Counter(e["rank"] for e in events if e["kind"] == "calibrate")
    assert calibrations == Counter({0: 1}), calibrations  # measured once, sent to rank 1

    # Validation and test were split over the two ranks; the metrics hold every image, gathered.
    summary = json.loads((out / "data_summary.json").read_text())
    assert json.loads((out / "test_metrics.json").read_text())["test_n"] == summary["splits"]["test"] >= 3
    assert json.loads((out / "eval_metrics.json").read_text())["eval_n"] == summary["splits"]["validation"] >= 3
    options = json.loads((out / "training_options.json").read_text())
    assert (options["processes"], options["total_batch_size"], options["precision"]) == (2, 4, "fp32")
    assert not (out / ".face-crops").exists()  # the crops shared with rank 1 are gone
    assert result.stdout.count("model saved to") == 1


class _Draws(torch.utils.data.Dataset):
    """Each item: the first number its FaceTransform's generator gives in that process."""

    def __init__(self, transform: FaceTransform, n: int) -> None:
        self.transform, self.n = transform, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> float:
        return self.transform.rng.random()


def test_augmentation_differs_per_worker_rank_and_epoch(monkeypatch: pytest.MonkeyPatch):
    transform = FaceTransform(processor=None, augment=True, seed=7)
    loader = torch.utils.data.DataLoader(_Draws(transform, 8), batch_size=1, num_workers=2)
    first, second = [float(x) for x in loader], [float(x) for x in loader]
    assert len(set(first)) == 8 and not set(first) & set(second)

    draws = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        draws[rank] = [FaceTransform(processor=None, augment=True, seed=7).rng.random() for _ in range(3)]
    assert draws["0"] != draws["1"]
    monkeypatch.setenv("RANK", "1")
    assert [FaceTransform(processor=None, augment=True, seed=7).rng.random() for _ in range(3)] == draws["1"]  # seeded


def test_precision_flags_are_honoured():
    assert resolve_precision(None, None, cuda=True, bf16_supported=True) == (False, True)
    assert resolve_precision(None, None, cuda=True, bf16_supported=False) == (True, False)
    assert resolve_precision(False, False, cuda=True, bf16_supported=True) == (False, False)
    assert resolve_precision(True, None, cuda=True, bf16_supported=True) == (True, False)
    assert resolve_precision(None, None, cuda=False) == (False, False)


def test_fp32_asked_on_a_gpu_stays_fp32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from transformers import HfArgumentParser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    parser = HfArgumentParser(AgeTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output-dir", str(tmp_path), "--fp16", "False", "--bf16", "False", "--use-cpu", "true"]
    )
    assert (args.fp16, args.bf16) == (False, False)
    (args,) = parser.parse_args_into_dataclasses(["--output-dir", str(tmp_path), "--fp16", "--use-cpu", "true"])
    assert (args.fp16, args.bf16) == (True, False)
