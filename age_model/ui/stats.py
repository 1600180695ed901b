"""The Stats tab of /annotate (agreement, votes per annotator, statuses, export) and the scheduled
Hub push of the feedback export (``app.py --push-feedback-to REPO``)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from age_model.ui.errors import user_error

if TYPE_CHECKING:
    from age_model.feedback import FeedbackStore
    from age_model.ui.annotate import Annotator

logger = logging.getLogger(__name__)

ANNOTATOR_COLUMNS = ["annotator", "votes", "pairs", "mean |diff| (y)", "within 5 y"]
STATUS_COLUMNS = ["status", "samples"]
SOURCE_COLUMNS = [
    "source",
    "samples with 2+ annotators",
    "pairs",
    "mean |diff| (y)",
    "within 5 y",
    "Krippendorff's alpha",
]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _years(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _alpha(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def stats_view(
    backend: Annotator, queue_name: str, request: gr.Request | None
) -> tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Figures for the selected queue and the whole store (agreement per source, with Krippendorff's alpha)."""
    from age_model.feedback.export import feedback_stats

    backend.user(request)
    queue = backend.queue(queue_name)
    progress = queue.progress()
    agree = queue.agreement()
    overall = feedback_stats(backend.store)
    where = {"groups": "conflicting duplicates", "submissions": "submissions"}.get(
        queue.kind, f"data set `{getattr(backend.review, 'name', '')}`"
    )
    if agree["pairs"]:
        agreement = (
            f"{agree['samples_with_multiple_annotators']:,} items have two or more annotators: their votes differ "
            f"by **{_years(agree['mean_abs_diff'])} years** on average, **{_pct(agree['within_5'])}** of pairs "
            f"are within 5 years, Krippendorff's alpha **{_alpha(agree['alpha'])}** (1: perfect, 0: chance)."
        )
    else:
        agreement = "No item in this queue has two annotators yet, so there is no agreement figure."
    whole = overall["agreement"]
    text = "\n".join(
        [
            f"### This queue ({where})",
            f"{progress.total:,} items: {progress.done:,} settled, {progress.left:,} left. {agreement}",
            "",
            "### The whole store",
            f"{overall['num_samples']:,} labelled samples, {overall['num_votes']:,} active votes "
            f"({overall['num_vote_records']:,} vote rows, {overall['num_retractions']:,} undone); "
            f"an export holds {overall['num_rows']:,} rows. Agreement over all queues: "
            + (
                f"mean |diff| {_years(whole['mean_abs_diff'])} years, {_pct(whole['within_5'])} within 5 years "
                f"({whole['pairs']:,} pairs), Krippendorff's alpha {_alpha(whole.get('alpha'))}."
                if whole["pairs"]
                else "no sample has two annotators yet."
            ),
            "",
            "A label is *settled* when the annotators agree (standard deviation ≤ 5 years) and, if it moves a face "
            "across 18 or 25, a second annotator confirms the new side. Only settled labels are used for retraining.",
        ]
    )
    per = agree["per_annotator"]
    annotators = pd.DataFrame(
        [
            [name, figures["votes"], figures["pairs"], _years(figures["mean_abs_diff"]), _pct(figures["within_5"])]
            for name, figures in per.items()
        ],
        columns=ANNOTATOR_COLUMNS,
    )
    statuses = pd.DataFrame(sorted(progress.by_status.items()), columns=STATUS_COLUMNS)
    sources = pd.DataFrame(
        [
            [
                name,
                a["samples_with_multiple_annotators"],
                a["pairs"],
                _years(a["mean_abs_diff"]),
                _pct(a["within_5"]),
                _alpha(a["alpha"]),
            ]
            for name, a in overall["agreement_by_source"].items()
        ],
        columns=SOURCE_COLUMNS,
    )
    return text, annotators, statuses, sources


def export_command(store: FeedbackStore, out: Path) -> str:
    return f"python -m age_model.feedback export {out} --store '{store.location.display()}' --overwrite"


def export_now(backend: Annotator, request: gr.Request | None) -> str:
    """Write a new export folder under the store's folder and say where (nothing is overwritten)."""
    from age_model.publish import export_feedback

    user = backend.user(request)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = backend.folder / "exports" / f"feedback-{stamp}-{user}"
    try:
        result = export_feedback(backend.store, out)
    except (OSError, ValueError) as error:
        raise user_error(f"Export failed: {error}") from None
    logger.info("%s exported %d rows to %s", user, result.num_rows, result.path)
    return (
        f"Exported **{result.num_rows:,} rows** to `{result.path}`  \n"
        f"Load it with `datasets.load_dataset('{result.path}')` (its votes: `load_dataset('{result.path}', 'votes')`); "
        f"train on it with `train.py --feedback {result.path}`. "
        f"The same from a shell:\n\n```\n{export_command(backend.store, result.path)}\n```"
    )


def build_stats_tab(backend: Annotator, queue_name: gr.Radio, tab: gr.Tab) -> None:
    """Lay out the Stats tab inside the current Blocks context (the queue selector lives on the Annotate tab)."""
    refresh = gr.Button("Refresh", size="sm", elem_id="stats_refresh")
    summary = gr.Markdown(elem_id="stats_summary")
    sources = gr.Dataframe(
        headers=SOURCE_COLUMNS, label="Agreement per source (whole store)", interactive=False, elem_id="stats_sources"
    )
    with gr.Row():
        annotators = gr.Dataframe(
            headers=ANNOTATOR_COLUMNS,
            label="Votes and agreement per annotator (this queue)",
            interactive=False,
            elem_id="stats_annotators",
        )
        statuses = gr.Dataframe(
            headers=STATUS_COLUMNS, label="Statuses (this queue)", interactive=False, elem_id="stats_statuses"
        )
    gr.Markdown(
        "### Export\nWrites the feedback dataset (parquet + card: corrections of third-party data sets without "
        "their images, consented uploads with theirs) into a new folder beside the store."
    )
    export = gr.Button("Export dataset", elem_id="stats_export")
    exported = gr.Markdown(elem_id="stats_export_result")

    def show_stats(queue: str, request: gr.Request):
        return stats_view(backend, queue, request)

    def export_dataset(request: gr.Request):
        return export_now(backend, request)

    outputs = [summary, annotators, statuses, sources]
    refresh.click(show_stats, inputs=queue_name, outputs=outputs, api_name="stats", concurrency_limit=4)
    tab.select(show_stats, inputs=queue_name, outputs=outputs, api_visibility="private", concurrency_limit=4)
    export.click(export_dataset, outputs=exported, api_name="export", concurrency_limit=1)


# ----------------------------------------------------------------------------- scheduled push


def _fingerprint(store: FeedbackStore) -> tuple[int, int]:
    votes = store.votes()
    return len(votes), max((v.id for v in votes), default=0)


def start_scheduled_push(store: FeedbackStore, folder: Path, repo_id: str, every_minutes: float) -> threading.Thread:
    """Push the feedback export to ``repo_id`` every ``every_minutes`` from a background thread.

    The export is refreshed in ``folder`` (under the scheduler's lock, only when votes changed) right
    before each scheduled upload, so uploads never see a half-written export. Without a token or
    without the Hub this only logs a warning: the app and the local store are unaffected.
    """

    def run() -> None:
        from age_model.hub import make_feedback_scheduler
        from age_model.publish import export_feedback

        last: list[tuple[int, int] | None] = [None]

        def refresh() -> None:
            mark = _fingerprint(store)
            if mark != last[0]:
                export_feedback(store, folder, overwrite=True)
                last[0] = mark

        try:
            refresh()
            scheduler = make_feedback_scheduler(folder, repo_id, every_minutes)
        except Exception as error:  # HubError (no token, no network) or an export problem
            logger.warning(
                "Scheduled push of the feedback dataset to %s is OFF: %s The app works on; push later with "
                "`python -m age_model.feedback export OUT --push-to-hub %s`.",
                repo_id,
                str(error).rstrip("."),
                repo_id,
            )
            return
        upload = scheduler.push_to_hub

        def export_then_upload() -> Any:
            try:
                with scheduler.lock:
                    refresh()
            except Exception as error:
                logger.warning("feedback export before the scheduled push failed: %s", error)
            return upload()

        scheduler.push_to_hub = export_then_upload  # what CommitScheduler calls every `every_minutes`
        logger.info("feedback dataset: pushing %s to %s every %g minutes", folder, repo_id, every_minutes)

    thread = threading.Thread(target=run, name="agecheck-feedback-push", daemon=True)
    thread.start()
    return thread
