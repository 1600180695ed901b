r"""Cards for the Hub: the training data's dataset cards, the model card and the feedback dataset card.

Every number on a card is computed from what the card describes (label files, the run's metrics, the
feedback store's stats), so a card cannot drift from its data. The prose lives in Jinja2 templates
under ``data_cards/templates/``; the modules here only gather the numbers and pick the Hub metadata:

- ``stats``: numbers from label files;  ``render``: documented sources, licences, templates;
- ``dataset_card``, ``model_card``, ``feedback_card``: one renderer each;  ``__main__``: the CLI.

CLI (regenerates the committed data cards)::

    python -m age_model.cards dataset-card appa-real \
        --labels ../shared/data/appa_real_labels/labels_full.csv --out data_cards/appa-real.md
    python -m age_model.cards dataset-card utkface \
        --labels ../shared/data/utkface/labels.csv --out data_cards/utkface.md
    python -m age_model.cards dataset-card aaf --labels ../shared/data/aaf/labels.csv --out data_cards/aaf.md

Where the images lie beside the label file (``images/``), the card also counts near-duplicate groups and
label conflicts among them (``age_model.data.duplicate_summary``; dHashes are cached under ~/.cache/agecheck).
"""

from __future__ import annotations

from age_model.cards.dataset_card import render_dataset_card
from age_model.cards.feedback_card import render_feedback_card
from age_model.cards.model_card import model_card_for_run, render_model_card
from age_model.cards.render import CARDS_DIR, KNOWN_DATASETS, TEMPLATES_DIR, KnownDataset, known_dataset
from age_model.cards.stats import age_band_counts, age_stats

__all__ = [
    "CARDS_DIR",
    "KNOWN_DATASETS",
    "TEMPLATES_DIR",
    "KnownDataset",
    "age_band_counts",
    "age_stats",
    "known_dataset",
    "model_card_for_run",
    "render_dataset_card",
    "render_feedback_card",
    "render_model_card",
]
