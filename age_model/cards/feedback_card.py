"""The feedback dataset's card, from the store's stats (every key may be missing: the card says so)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from age_model.cards.render import license_fields, mapping, number, render_template
from age_model.cards.stats import size_category


def counts(value: Any) -> list[tuple[str, int]]:
    """A {name: count} mapping as rows, largest first; anything else (missing, a bare number) as none."""
    if not isinstance(value, Mapping):
        return []
    return sorted(((str(k), int(v or 0)) for k, v in value.items()), key=lambda kv: (-kv[1], kv[0]))


def render_feedback_card(stats: dict) -> DatasetCard:
    """The feedback dataset's card from the store's stats; every key may be missing (the card says 'not recorded')."""
    stats = dict(stats or {})
    num_samples, num_votes = number(stats.get("num_samples")), number(stats.get("num_votes"))
    agreement = mapping(stats.get("agreement"))
    per_annotator = {
        str(name): number(mapping(a).get("mean_abs_diff"))
        for name, a in mapping(agreement.get("per_annotator")).items()
    }
    configs = stats.get("configs") if isinstance(stats.get("configs"), list) else []
    extra_meta = {k: stats[k] for k in ("configs", "dataset_info") if stats.get(k)}
    card_data = DatasetCardData(
        pretty_name="agecheck feedback: age labels from annotators",
        **license_fields(stats.get("license")),
        task_categories=["image-classification"],
        tags=["age-estimation", "faces", "human-feedback", "agecheck"],
        size_categories=[size_category(int(num_samples))] if num_samples is not None else None,
        **extra_meta,
    )
    include_images = stats.get("include_dataset_images")
    content = render_template(
        "feedback_card.md.j2",
        card_data=card_data.to_yaml(),
        num_samples=num_samples,
        num_votes=num_votes,
        num_rows=number(stats.get("num_rows")),
        votes_per_sample=num_votes / num_samples if num_samples and num_votes is not None else None,
        annotators=counts(stats.get("annotators")),
        consent=counts(stats.get("consent")),
        sources=counts(stats.get("sources")),
        statuses=counts(stats.get("statuses")),
        mean_abs_diff=number(agreement.get("mean_abs_diff")),
        within_5=number(agreement.get("within_5")),
        pairs=number(agreement.get("pairs")),
        multi=number(agreement.get("samples_with_multiple_annotators")),
        per_annotator=per_annotator,
        config_names=[mapping(c).get("config_name") for c in configs],
        include_dataset_images=include_images if isinstance(include_images, bool) else None,
        license=stats.get("license") or "not recorded",
        # issue 12: Krippendorff's alpha (overall, per source), pseudonymous names, the export's content hash
        alpha=number(agreement.get("alpha")),
        by_source={str(k): mapping(v) for k, v in mapping(stats.get("agreement_by_source")).items()},
        pseudonymous=bool(stats.get("pseudonymous")),
        fingerprint=stats.get("fingerprint"),
    )
    return DatasetCard(content)
