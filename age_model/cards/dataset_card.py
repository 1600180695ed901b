"""The dataset card of a documented training source (APPA-REAL, UTKFace, AAF), computed from its label file."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from age_model.cards.render import KNOWN_DATASETS, license_fields, render_template
from age_model.cards.stats import duplicate_facts, label_summary, read_labels, size_category


def render_dataset_card(name: str, labels: Path) -> DatasetCard:
    """The dataset card of a known training source, computed from its label file."""
    known = KNOWN_DATASETS[name]
    rows = read_labels(labels)
    summary = label_summary(rows)
    card_data = DatasetCardData(
        pretty_name=known.pretty_name,
        **license_fields(None, known),
        task_categories=["image-classification"],
        tags=list(known.tags),
        size_categories=[size_category(summary["n"])],
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in summary["splits"]]}
        ],
        dataset_info={
            "features": [dict(f) for f in known.features],
            "splits": [{"name": s, "num_examples": n} for s, n in summary["splits"].items()],
        },
    )
    extra = known.extra(rows) if known.extra else {}
    content = render_template(
        f"{name}.md.j2",
        card_data=card_data.to_yaml(),
        data=summary,
        known=known,
        labels_file=Path(labels).name,
        duplicates=duplicate_facts(labels, rows),
        **extra,
    )
    return DatasetCard(content)
