"""The Age groups tab: many photos, a zip or a video in; faces per age band as a chart, a table and a CSV out.

The page is public, so every input is hostile: at most :data:`MAX_UPLOADS` files a request, zips
read in memory under :data:`age_model.groups.PAGE_LIMITS` (members, bytes, compression ratio,
names), videos up to 1920x1080 and 5 minutes, 2,000 photos a run. Uploaded files are deleted from the server as
soon as they have been counted; only the rows and the summary are kept (the CSV, which expires with
the other results).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from age_model.groups import (
    IMAGE_SUFFIXES,
    PAGE_LIMITS,
    PRIVACY_NOTE,
    UNCERTAIN,
    UNCERTAIN_RULE,
    VIDEO_SUFFIXES,
    ZIP_SUFFIXES,
    Bands,
    GroupCounter,
    Report,
    counted_text,
    summary_markdown,
    write_csv,
)
from age_model.ui.errors import user_error
from age_model.ui.predict_tab import finite_number
from age_model.ui.state import AppState

logger = logging.getLogger(__name__)

MAX_UPLOADS = 100  # files per request
MAX_TABLE_ROWS = 1000  # rows shown on the page; the CSV has them all
EVERY_RANGE = (0.5, 10.0)  # seconds between the video frames read
RESULTS_KEEP_SECONDS = 600
TABLE_HEADERS = ["file", "time (s)", "age", "±", "band", "estimate band", "box (x0, y0, x1, y1)"]
IN_BAND, CROSSES = "± inside the band", "± crosses a band edge"
CHART_COLORS = {IN_BAND: "#2563eb", CROSSES: "#9ca3af"}
INTRO = (
    "### Shoppers by age group\n"
    "Upload many photos, a zip of photos or a video: every face is counted in its age band. A face whose "
    "age ± spread crosses a band edge is counted as **uncertain** (grey in the chart, in the band of its "
    "estimate). Videos are read one frame every few seconds and a face seen in neighbouring frames counts once.\n\n"
    f"**Privacy:** {PRIVACY_NOTE} Your uploads are deleted from the server as soon as they have been counted; "
    "the table and CSV hold boxes, ages and bands only."
)


def check_files(files: Any) -> list[str]:
    """The uploaded files' server paths (Gradio's own uploads; it refuses any other path)."""
    if files is None or files == []:
        raise user_error("No files yet: upload photos, a zip of photos or a video.")
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise user_error("Send a list of uploaded files.")
    if len(files) > MAX_UPLOADS:
        raise user_error(
            f"{len(files)} files is too many for one run: at most {MAX_UPLOADS}. Put photos in a zip, "
            "or use the command line (python -m age_model.predict --bands) for more."
        )
    return files


def chart_frame(report: Report) -> pd.DataFrame:
    """Faces per band (by estimate), split into those whose ± stays in the band and the uncertain ones."""
    sure = {name: 0 for name in report.bands.names}
    crossing = dict(sure)
    for row in report.rows:
        if row.estimate_band in sure:
            (crossing if row.band == UNCERTAIN else sure)[row.estimate_band] += 1
    records = [{"band": name, "faces": sure[name], "kind": IN_BAND} for name in report.bands.names]
    records += [{"band": name, "faces": crossing[name], "kind": CROSSES} for name in report.bands.names]
    return pd.DataFrame.from_records(records)


def table_rows(report: Report) -> list[list[Any]]:
    rows = []
    for row in report.rows[:MAX_TABLE_ROWS]:
        when = "" if row.time_s is None else f"{row.time_s:g}-{row.until_s:g}"
        box = ", ".join(f"{v:.0f}" for v in (row.x0, row.y0, row.x1, row.y1))
        rows.append([row.file, when, round(row.age, 1), round(row.spread, 1), row.band, row.estimate_band, box])
    return rows


def csv_file(report: Report, folder: Path | None) -> str:
    """The face rows as a CSV of its own (a unique folder per request), in the server's private results folder."""
    root = (folder or Path(os.environ.get("GRADIO_TEMP_DIR") or "/tmp")) / "agecheck-results"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.glob("groups-*"):  # keep the folder small, as the Predict tab does
        try:
            if now - old.stat().st_mtime > RESULTS_KEEP_SECONDS:
                for child in old.iterdir():
                    child.unlink()
                old.rmdir()
        except OSError:
            pass
    target = root / f"groups-{uuid.uuid4().hex}"
    target.mkdir()
    path = target / "age-groups.csv"
    write_csv(report.rows, path)
    return str(path)


def status_markdown(report: Report) -> str:
    lines = [
        f"**{counted_text(report)}** Took {report.seconds:.1f} s.",
        "",
        summary_markdown(report),
        "",
        f"_{UNCERTAIN_RULE}._",
    ]
    if len(report.rows) > MAX_TABLE_ROWS:
        lines.append(
            f"\nThe table shows the first {MAX_TABLE_ROWS:,} of {len(report.rows):,} faces; the CSV has them all."
        )
    if report.problems:
        lines += ["", "**Not counted:**"] + [f"- {problem}" for problem in report.problems[:20]]
        if len(report.problems) > 20:
            lines.append(f"- ... and {len(report.problems) - 20} more")
    return "\n".join(lines)


def forget_uploads(paths: list[str], state: AppState) -> None:
    """Delete the uploaded files (only inside this server's own upload folder)."""
    roots = [Path(p).resolve() for p in (state.upload_folder, os.environ.get("GRADIO_TEMP_DIR")) if p]
    for path in paths:
        resolved = Path(path).resolve()
        if any(resolved.is_relative_to(root) for root in roots) and resolved.is_file():
            try:
                resolved.unlink()
            except OSError as error:
                logger.warning("could not delete an upload: %s", error.strerror)


def count_groups(state: AppState, files: Any, every: Any, progress: Any = None) -> tuple[Any, ...]:
    """The work behind the Count button and the `/age_groups` API endpoint."""
    predictor = state.require_predictor()
    every = finite_number(every, "The time between video frames", *EVERY_RANGE)
    paths = check_files(files)
    counter = GroupCounter(predictor, Bands(), PAGE_LIMITS, every_seconds=every)
    report_progress = None if progress is None else (lambda fraction, message: progress(fraction, desc=message))
    try:
        report = counter.run([(Path(p).name, p) for p in paths], report_progress)
    finally:
        forget_uploads(paths, state)
    if not report.counted_anything:
        raise user_error("Nothing could be counted. " + " ".join(report.problems[:5]))
    logger.info(
        "age groups: %d faces in %d photos and %d videos, %d problems, %.1f s",
        report.faces,
        report.photos,
        report.videos,
        len(report.problems),
        report.seconds,
    )
    return (
        status_markdown(report),
        chart_frame(report),
        table_rows(report),
        csv_file(report, state.upload_folder),
        None,
    )


def build_groups_tab(state: AppState) -> None:
    """Lay out the Age groups tab inside the current Blocks context and wire its event."""
    gr.Markdown(INTRO, elem_id="groups_intro")
    names = Bands().names
    types = sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES | ZIP_SUFFIXES)
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(
                file_count="multiple",
                file_types=types,
                label="Photos, zips of photos or videos",
                elem_id="groups_files",
                height=220,
            )
            every = gr.Slider(
                *EVERY_RANGE,
                value=1.0,
                step=0.5,
                label="Videos: read one frame every N seconds",
                elem_id="groups_every",
            )
            count = gr.Button("Count faces by age group", variant="primary", elem_id="groups_count")
            download = gr.File(
                label="CSV of the face rows (no images)", elem_id="groups_csv", interactive=False, height=90
            )
        with gr.Column(scale=1):
            chart = gr.BarPlot(
                x="band",
                y="faces",
                color="kind",
                sort=names,
                color_map=CHART_COLORS,
                title="Faces per age band",
                x_title="age band (by estimate)",
                y_title="faces",
                color_title="",
                label="Faces per age band",
                show_label=False,
                elem_id="groups_chart",
            )
    status = gr.Markdown(elem_id="groups_status")
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        datatype=["str", "str", "number", "number", "str", "str", "str"],
        label="Faces",
        interactive=False,
        elem_id="groups_table",
        max_height=400,
    )

    def on_count(files: list[str] | None, every: float, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
        return count_groups(state, files, every, progress)

    count.click(on_count, inputs=[files, every], outputs=[status, chart, table, download, files], api_name="age_groups")
