"""What every card shares: the documented training sources, Hub licence metadata, the Jinja2 templates
under ``data_cards/templates/`` (prose lives there; the renderers only gather numbers), and the small
coercions that keep a card readable when a figure is missing."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from age_model.cards.stats import aaf_extra, appa_real_extra, utkface_extra
from age_model.resources import CARD_TEMPLATES_DIR as TEMPLATES_DIR
from age_model.resources import REPO_ROOT

CARDS_DIR = REPO_ROOT / "data_cards"  # the committed data cards (a clone only)
SHARED_DIR = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))

# Hub licence ids we may write as-is; anything else becomes `license: other` plus a license_name.
HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "openrail",
    "unknown",
}


@dataclass(frozen=True)
class KnownDataset:
    """A training source agecheck documents: how to label it on the Hub and where its terms are."""

    name: str
    pretty_name: str
    labels: str  # default label file, relative to the shared folder
    license_name: str
    license_link: str
    terms: str
    features: tuple[dict[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    extra: Callable[[list[dict[str, str]]], dict[str, Any]] | None = field(default=None, compare=False)


CONTRACT_FEATURES = ({"name": "image", "dtype": "image"}, {"name": "age", "dtype": "float32"})
ID_FEATURES = ({"name": "source", "dtype": "string"}, {"name": "id", "dtype": "string"})

KNOWN_DATASETS: dict[str, KnownDataset] = {
    "appa-real": KnownDataset(
        name="appa-real",
        pretty_name="APPA-REAL",
        labels="data/appa_real_labels/labels_full.csv",
        license_name="appa-real-research-only",
        license_link="http://chalearnlap.cvc.uab.es/dataset/26/description/",
        terms="research use only (ChaLearn LAP / APPA-REAL terms); the photos show real people: do not redistribute "
        "them",
        features=(
            *CONTRACT_FEATURES,
            {"name": "apparent_age_mean", "dtype": "float32"},
            {"name": "apparent_age_std", "dtype": "float32"},
            *ID_FEATURES,
        ),
        tags=("age-estimation", "apparent-age", "faces", "regression"),
        extra=appa_real_extra,
    ),
    "utkface": KnownDataset(
        name="utkface",
        pretty_name="UTKFace",
        labels="data/utkface/labels.csv",
        license_name="utkface-non-commercial-research",
        license_link="https://susanqq.github.io/UTKFace/",
        terms="non-commercial research only; the copyright of the images stays with their owners: do not redistribute "
        "them",
        features=(*CONTRACT_FEATURES, *ID_FEATURES),
        tags=("age-estimation", "faces", "regression"),
        extra=utkface_extra,
    ),
    "aaf": KnownDataset(
        name="aaf",
        pretty_name="All-Age-Faces (AAF)",
        labels="data/aaf/labels.csv",
        license_name="aaf-research-use-citation",
        license_link="https://github.com/JingchunCheng/All-Age-Faces-Dataset",
        terms="research use only, no explicit licence, citation asked; image copyright stays with the owners: do not "
        "redistribute them",
        features=(*CONTRACT_FEATURES, *ID_FEATURES),
        tags=("age-estimation", "faces", "regression"),
        extra=aaf_extra,
    ),
}


def known_dataset(name: str) -> KnownDataset | None:
    """The documented source a data folder is a copy of: 'utkface', 'UTKFace_crops', 'appa-real-release', ..."""
    normalised = name.lower().replace("_", "-")
    return next((known for key, known in KNOWN_DATASETS.items() if key in normalised), None)


def _years(value: Any) -> str:
    """Ages as people write them: 29, not 29.0; 32.5 stays."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters.update(
        thousands=lambda n: f"{int(n):,}",
        pct=lambda x: "n/a" if x is None else f"{100 * float(x):.1f}%",
        years=_years,
        signed=_signed,
        num=lambda x, digits=2: "n/a" if x is None else f"{float(x):.{digits}f}",
    )
    return env


def render_template(name: str, **context: Any) -> str:
    """Render one of data_cards/templates/ (undefined names fail loudly instead of printing nothing)."""
    return _environment().get_template(name).render(**context)


def license_fields(license_text: str | None, known: KnownDataset | None = None) -> dict[str, str]:
    """Hub licence metadata: a Hub licence id as-is, else `other` with a slug name (and link if known)."""
    text = (license_text or "").strip()
    if text.lower() in HUB_LICENSES:
        return {"license": text.lower()}
    if not text and known is None:
        return {"license": "unknown"}
    fields = {"license": "other", "license_name": known.license_name if known and not text else slug(text)}
    if known:
        fields["license_link"] = known.license_link
    return fields


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64] or "custom"


def display_path(value: str) -> str:
    """A path safe to publish: relative paths as given, absolute ones cut to their last two parts."""
    path = Path(value)
    return value if not path.is_absolute() else f".../{'/'.join(path.parts[-2:])}"


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
