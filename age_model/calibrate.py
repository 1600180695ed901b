"""Fit a model's ± across sources on held-out faces, through the serving path, and store it.

    python -m age_model.calibrate MODEL --data ../shared/data/utkface:validation \
        --data ../shared/data/aaf:validation:detect [--target 0.7]

Each ``--data`` is ``PATH[:SPLIT[:cropped|detect]]``: ``cropped`` feeds the images as face crops
(``AgePredictor.predict_crops``), ``detect`` runs them through detection and the calibrated crop
exactly as a photo from the app (``AgePredictor.predict``, largest face). ``train.py`` does the same
fit on its validation split; this command refits an existing model (for instance on a source it
was not trained with) and rewrites ``spread_scale`` and ``spread_coverage`` in its config.json.
Never calibrate on the split you report on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from age_model.data import SPLIT_ALIASES, load_age_dataset, parse_source_spec
from age_model.modeling import fit_spread_scale

logger = logging.getLogger(__name__)
CHUNK = 64


@dataclass
class SourceSpec:
    """One ``PATH[:SPLIT[:FACES]]`` argument."""

    path: str
    split: str = "validation"
    faces: str | None = None  # None: as the loader says (crops are crops, photos are detected)

    @classmethod
    def parse(cls, spec: str, default_split: str = "validation") -> "SourceSpec":
        path, split, faces = parse_source_spec(spec, default_split)
        return cls(path, SPLIT_ALIASES.get(split.lower(), split), faces)


def held_out_errors(predictor, spec: SourceSpec) -> tuple[str, np.ndarray, np.ndarray]:  # noqa: ANN001 (AgePredictor)
    """(source name, signed errors, spreads) of one source's split through the serving path."""
    dataset, report = load_age_dataset(spec.path)
    if spec.split not in dataset:
        raise ValueError(f"{spec.path} has no {spec.split!r} split (it has {', '.join(dataset)}).")
    rows = dataset[spec.split]
    faces = spec.faces or report.faces
    name = f"{rows[0]['source'] if len(rows) else Path(spec.path).name}"
    errors, spreads = [], []
    for start in tqdm(range(0, len(rows), CHUNK), desc=f"{name} {spec.split}", unit="batch"):
        chunk = rows.select(range(start, min(start + CHUNK, len(rows))))
        images, ages = [image.convert("RGB") for image in chunk["image"]], np.asarray(chunk["age"], dtype=float)
        if faces == "cropped":
            predicted, spread = predictor.predict_crops(images)
        else:
            results = predictor.predict(images)
            found = [i for i, r in enumerate(results) if r.faces]
            predicted = np.asarray([results[i].faces[0].age for i in found])
            spread = np.asarray([results[i].faces[0].spread for i in found])
            ages = ages[found]
        errors.append(predicted - ages)
        spreads.append(spread)
    return name, np.concatenate(errors), np.concatenate(spreads)


def calibrate(model: str | Path, specs: Sequence[SourceSpec], target: float = 0.7) -> dict[str, object]:
    """Fit the spread scale of ``model`` (a local folder) on ``specs`` and write it into its config.json."""
    from age_model.predictor import AgePredictor

    predictor = AgePredictor(str(model))
    predictor.settings.spread_scale = 1.0  # fit from the unscaled spread
    names, errors, spreads = [], [], []
    for spec in specs:
        name, err, spread = held_out_errors(predictor, spec)
        names += [name] * len(err)
        errors.append(err)
        spreads.append(spread)
    all_errors, all_spreads, labels = np.concatenate(errors), np.concatenate(spreads), np.asarray(names)
    scale, coverage = fit_spread_scale(all_errors, all_spreads, names, target=target)
    config_path = Path(model) / "config.json"
    config = json.loads(config_path.read_text())
    config.setdefault("agecheck", {}).update(spread_scale=scale, spread_target=target, spread_coverage=coverage)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    inside = np.abs(all_errors) <= all_spreads
    before = {n: float(inside[labels == n].mean()) for n in sorted(set(names))}
    return {
        "spread_scale": scale,
        "coverage_before": before,
        "coverage_after": coverage,
        "faces": {n: names.count(n) for n in sorted(set(names))},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a local model folder (train.py output)")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PATH[:SPLIT[:FACES]]",
        help="held-out faces of one source (repeat for several); SPLIT defaults to validation",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=0.7,
        help="share of errors the ± must cover on every source (default %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"{args.model}: not a model folder (no config.json)")
    try:
        result = calibrate(args.model, [SourceSpec.parse(spec) for spec in args.data], args.target)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
