"""The annotators' page at /annotate (behind login): review labels worst-first, a bulk grid, Stats.

Three queues, picked with a selector:

- **Data set**: the folder given by ``--review`` (all splits), loaded and scored in the background by
  ``age_model.review_scoring.DatasetReview``; the queue opens before any score exists.
- **Conflicting duplicates**: near-duplicate groups of that data set whose labels disagree, shown
  side by side; one decision labels every copy.
- **Submissions**: the stakeholders' uploads and webcam captures, and the public page's
  unverified reports (the stranger's pseudonym and reported age are shown; nothing of theirs trains
  before an annotator decides).

Every rule of the review (who may vote on what, what a confirm means, what undo takes back) lives
in ``age_model.review.ReviewQueue``; this module only renders what the queue hands out and turns
clicks into queue calls. Pictures travel inline in the logged-in page (data URIs), never as files
in Gradio's cache, which the public page shares. The keyboard shortcuts and styles are files
(``ui/static/annotate.html``, ``annotate.css``) that server.py mounts with the page.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from age_model.ages import AGE_RANGE
from age_model.feedback import FeedbackError, is_public_submitter
from age_model.review import ReviewItem, ReviewQueue
from age_model.review_scoring import CLAIM_TTL, DatasetReview, ScoreCache, SubmissionScores, model_key, store_folder
from age_model.ui.errors import user_error
from age_model.ui.state import AppState

if TYPE_CHECKING:
    from age_model.ui.server import ServerOptions

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
HEAD_PATHS = [STATIC / "annotate.html"]  # keyboard shortcuts (Gradio 6 takes custom JavaScript in the head)
CSS_PATHS = [STATIC / "annotate.css"]
DATASET, GROUPS, SUBMISSIONS = "dataset", "groups", "submissions"
GRID_SIZE = 12
REFRESH_S = 3.0  # the page looks for work by itself this often while it shows nothing to do
VOTE_COLUMNS = ["vote", "when (UTC)", "annotator", "age", "replaced", "note"]

HOW_TO_ENABLE = (
    "Annotation is switched off: no annotator logins are configured, and votes are never anonymous. "
    "Start the app with `python app.py --annotators FILE` (one `name:password` per line), or set "
    "`AGECHECK_ANNOTATORS='alice:pw1,bob:pw2'`, then log in at /annotate."
)
SHORTCUTS = (
    "Keys: **C** or **Enter** confirm · **0-9** type a corrected age, **Enter** saves it · **S** skip · "
    "**U** undo · **N** next · **Esc** leave a field. Bulk grid: **1-9, 0, -, =** (or a click) mark a "
    "wrong label · **Enter** confirm the others · **G** new grid · **U** undo"
)


def inline_image(image: Any, alt: str, max_side: int = 512) -> str:
    """An ``<img>`` with the picture inside it (a JPEG data URI): it travels only in the logged-in
    page's own response, so no URL exists that a stranger could fetch."""
    picture = image.convert("RGB")
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="{html.escape(alt)}">'


def _age(value: float | None) -> str:
    return "–" if value is None else f"{round(float(value), 1):g}"


class Annotator:
    """What the page does, independent of its layout: the handlers call these, these call the queues."""

    def __init__(self, state: AppState, options: ServerOptions) -> None:
        self.state = state
        self.options = options
        self.store = state.store
        self.enabled = bool(getattr(options, "annotators", None) or getattr(options, "hf_annotators", None))
        self.folder = store_folder(self.store) if self.store is not None else None
        self.review: DatasetReview | None = None
        self.submissions: ReviewQueue | None = None
        predictor = state.predictor
        if self.store is not None:
            cache_dir = self.folder / "review_scores"
            scores = None
            if predictor is not None:
                scores = SubmissionScores(
                    self.store,
                    predictor,
                    ScoreCache.at(cache_dir / f"{model_key(state.model, state.model_version)}-cropped.jsonl"),
                    compute_missing=False,
                )
            self.submissions = ReviewQueue.for_submissions(
                self.store, predictions=scores, claim_ttl=CLAIM_TTL, model_version=state.model_version
            )
            if scores is not None:
                scores.compute_missing = True  # uploads that arrive from now on are scored as they come
            if options.review:
                self.review = DatasetReview(
                    options.review, self.store, predictor, cache_dir, state.model, state.model_version
                ).start()
                state.stoppers.append(self.review.stop)

    # -- who, which queue ----------------------------------------------------------------------

    def queue_choices(self) -> list[tuple[str, str]]:
        choices = []
        if self.review is not None:
            choices += [(f"Data set: {self.review.name}", DATASET), ("Conflicting duplicates", GROUPS)]
        return choices + [("Submissions (uploads, webcam, public reports)", SUBMISSIONS)]

    def user(self, request: gr.Request | None) -> str:
        """The logged-in annotator; without logins every vote action refuses."""
        name = getattr(request, "username", None)
        if not name:
            raise user_error(HOW_TO_ENABLE if not self.enabled else "Log in at /annotate first.")
        if self.store is None:
            self.state.require_store()
        if self.review is not None:
            self.review.go()  # an annotator is here: the server is up, scoring may take the CPU
        return str(name)

    def queue(self, name: str | None) -> ReviewQueue:
        """The chosen queue, or a readable reason why it is not open yet (the page retries by itself)."""
        if name == SUBMISSIONS or (name not in (DATASET, GROUPS) and self.review is None):
            if self.submissions is None:
                self.state.require_store()
            return self.submissions  # type: ignore[return-value]
        if self.review is None:
            raise user_error("No data set to review: start the app with `--review DATA` (any folder train.py reads).")
        if self.review.phase == "failed":
            raise user_error(self.review.status())
        queue = self.review.groups if name == GROUPS else self.review.queue
        if queue is None:
            what = (
                "The conflicting duplicates are still being looked for" if name == GROUPS else "The data set is loading"
            )
            raise user_error(f"{self.review.status()} {what}: this page shows the first item as soon as it is ready.")
        return queue

    def status_line(self) -> str:
        if self.state.predictor is None:
            parts = [f"No model loaded ({self.state.model_error}): items are not ranked by suspected error."]
        else:
            mae = self.state.metrics.get("test_mae")
            accuracy = f" (test MAE {mae:.1f} years)" if isinstance(mae, (int, float)) else ""
            parts = [f"Ranked by model `{self.state.model_version}`{accuracy}."]
        if self.review is not None:
            parts.append(self.review.status())
        return " ".join(parts)

    # -- rendering -----------------------------------------------------------------------------

    def progress(self, queue: ReviewQueue, annotator: str) -> str:
        p = queue.progress()
        contested = p.by_status.get("needs_another_look", 0) + p.by_status.get("pending_second_opinion", 0)
        mine = p.per_annotator.get(annotator, 0)
        what = {"groups": "Conflicting duplicates", "submissions": "Submissions"}.get(
            queue.kind, f"Data set `{self.review.name}`" if self.review is not None else "Data set"
        )
        return (
            f"**{what}**: {p.done:,} of {p.total:,} done (settled), **{p.left:,} left**"
            f"{f', {contested:,} waiting for another opinion' if contested else ''} · "
            f"**{annotator}**: {mine:,} vote{'s' * (mine != 1)} here"
        )

    def describe(self, item: ReviewItem) -> str:
        status = str(item.status).replace("_", " ")
        votes = "no votes yet" if item.num_votes == 0 else f"{item.num_votes} vote{'s' * (item.num_votes != 1)}"
        if item.members:
            ages = ", ".join(_age(a) for a in item.member_labels)
            return (
                f"**Conflicting duplicates** · {len(item.members)} copies of one photo labelled {ages} · **{status}**, "
                f"{votes}  \nType the age you see: **every copy gets it**, and training uses it for all of them."
            )
        name = f" · `{item.original_name}`" if item.original_name else ""
        why = "" if item.score is None else f" · suspicion {item.score:.1f} (|model − label| / spread)"
        reports = ""
        if item.reports:
            said = "; ".join(f"`{who.split(':', 1)[1]}` says {_age(age)}" for who, age in item.reports)
            reports = f"  \n**Unverified report from the public page** ({said}): it trains only once you decide."
        shown = "original label" if item.num_votes == 0 and item.index is not None else "current label"
        return (
            f"**{item.source}**{name} · sample `{item.sample_id[:12]}` · **{status}**, {votes}{why}{reports}  \n"
            f"Shown: the {shown}; confirm it if the face looks that age, otherwise type the age you see."
        )

    def vote_table(self, sample_id: str) -> pd.DataFrame:
        rows = []
        for v in self.store.votes(sample_id):
            age = "" if v.age is None else f"{round(v.age, 1):g}"
            what = f"#{v.id}" if v.kind == "vote" else f"#{v.id} undoes #{v.retracts}"
            who = f"{v.annotator} (unverified)" if is_public_submitter(v.annotator) else v.annotator
            replaced = "" if v.previous_label is None else f"{round(v.previous_label, 1):g}"
            rows.append([what, v.created_at.strftime("%Y-%m-%d %H:%M"), who, age, replaced, v.note or ""])
        return pd.DataFrame(rows, columns=VOTE_COLUMNS)

    def pictures(self, queue: ReviewQueue, item: ReviewItem) -> tuple[str, Any]:
        """The item's picture(s) as HTML, and the face crop the model sees (photos only); a file that
        cannot be read says so instead of breaking the page (skip it)."""
        try:
            return self._pictures(queue, item)
        except Exception as error:  # a broken or missing image file in the data set
            logger.warning("cannot show sample %s: %s", item.sample_id[:12], error)
            return (
                f"<p><b>This image cannot be read</b> ({html.escape(type(error).__name__)}): press Skip (S).</p>",
                None,
            )

    def _pictures(self, queue: ReviewQueue, item: ReviewItem) -> tuple[str, Any]:
        if item.members:
            figures = []
            for k, (sample_id, age) in enumerate(zip(item.members, item.member_labels)):
                image = inline_image(queue.image(item, member=k), f"Copy {k + 1}", max_side=320)
                figures.append(
                    f"<figure>{image}<figcaption>copy {k + 1} · labelled <b>{_age(age)}</b><br>"
                    f"<code>{sample_id[:12]}</code></figcaption></figure>"
                )
            return f'<div class="ann-members">{"".join(figures)}</div>', None
        image = queue.image(item)
        crop = None
        if queue.kind == "dataset" and self.review is not None and self.review.faces == "detect":
            try:
                crop = self.review.face_of(image)
            except Exception:  # a photo without a detectable face: the photo alone
                crop = None
        return inline_image(image, "Image under review"), crop

    def view(self, annotator: str, queue: ReviewQueue, item: ReviewItem | None, message: str) -> tuple:
        """Everything the Annotate tab shows, in the order of the layout's ``view`` list."""
        progress = self.progress(queue, annotator)
        if item is None:
            info = (
                "**Nothing left for you in this queue.** Every item is settled, already has your vote, or is "
                "being reviewed by someone else right now. This page looks again by itself; or switch queues."
            )
            return (
                "",
                "",
                gr.update(value="", visible=False),
                info,
                None,
                "",
                None,
                gr.update(value=30),
                pd.DataFrame(columns=VOTE_COLUMNS),
                progress,
                message,
            )
        pictures, crop = self.pictures(queue, item)
        label = None if item.label is None else round(float(item.label), 1)
        if item.model_age is None:
            model = "not scored yet" if self.state.predictor is not None else "no model loaded"
        else:
            spread = "" if item.model_spread is None else f" ± {item.model_spread:.1f}"
            model = f"{item.model_age:.1f}{spread}"
        known = [a for a in item.member_labels if a is not None]
        start = (
            label
            if label is not None
            else (
                round(statistics.median(known)) if known else None if item.model_age is None else round(item.model_age)
            )
        )
        return (
            item.sample_id,
            pictures,
            gr.update(
                value=inline_image(crop, "Face the model sees") if crop is not None else "", visible=crop is not None
            ),
            self.describe(item),
            label,
            model,
            start,
            gr.update(value=start if start is not None else 30),
            self.vote_table(item.sample_id),
            progress,
            message,
        )

    # -- actions: each one queue call, then the view ---------------------------------------------

    def _run(self, action: Any) -> Any:
        try:
            return action()
        except FeedbackError as error:  # the queue's refusals (and the store's) say what to do
            raise user_error(str(error)) from None

    def next(self, queue_name: str, sample_id: str | None, request: gr.Request | None, message: str = "") -> tuple:
        """The next item; with one on screen, move on from it (it goes back to the queue)."""
        annotator = self.user(request)
        queue = self.queue(queue_name)
        item = self._run(lambda: queue.next(annotator, after=sample_id or None))
        return self.view(annotator, queue, item, message)

    def switch(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        annotator = self.user(request)
        if sample_id:
            self.store.release(sample_id, annotator)
        try:
            return self.next(queue_name, None, request)
        except gr.Error as error:  # not open yet: an empty screen, which the timer fills once it is
            return empty_view(error.message)

    def vote(
        self, queue_name: str, sample_id: str | None, age: Any, request: gr.Request | None, confirm: bool
    ) -> tuple:
        annotator = self.user(request)
        queue = self.queue(queue_name)
        if not sample_id:
            raise user_error("No item on screen: press Next (N).")
        vote = self._run(lambda: queue.submit(sample_id, age, annotator, confirm=confirm))
        done = "Confirmed" if confirm else "Corrected to"
        copies = len(queue.candidate(sample_id).sample_ids)
        every = f" on all {copies} copies" if copies > 1 else ""
        item = self._run(lambda: queue.next(annotator))
        return self.view(
            annotator,
            queue,
            item,
            f"{done} {vote.age:g}{every} (sample `{sample_id[:12]}`, vote #{vote.id}). U undoes it.",
        )

    def skip(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        annotator = self.user(request)
        queue = self.queue(queue_name)
        item = self._run(lambda: queue.next(annotator, after=sample_id or None))
        note = f"Skipped `{sample_id[:12]}`: it goes back to the queue." if sample_id else ""
        return self.view(annotator, queue, item, note)

    def undo(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        """Retract this annotator's last decision and put its item back on screen if it is in this queue."""
        annotator = self.user(request)
        queue = self.queue(queue_name)
        retraction, item = self._run(lambda: queue.undo(annotator, current=sample_id or None))
        message = (
            f"Undid your vote on `{retraction.sample_id[:12]}` (vote #{retraction.retracts}; it stays in the "
            "history as undone)."
        )
        if item is not None:
            return self.view(annotator, queue, item, message + " Vote on it again.")
        return (
            self.next(queue_name, None, request, message)
            if not sample_id
            else self.view(annotator, queue, self._run(lambda: queue.next(annotator)), message)
        )

    def refresh(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        """The timer: while nothing is on screen, look for work (the data set may have opened)."""
        name = getattr(request, "username", None)
        header = f"Logged in as **{name}**. {self.status_line()}" if name else f"**{HOW_TO_ENABLE}**"
        if sample_id or not name:
            return (header, *[gr.skip()] * 11)
        try:
            queue = self.queue(queue_name)
            item = self._run(lambda: queue.next(self.user(request)))
        except gr.Error as error:
            return (header, *[gr.skip()] * 10, f"**{error.message}**")
        if item is None:  # still nothing: leave the screen (and the last message) as it is
            return (header, *[gr.skip()] * 9, self.progress(queue, name), gr.skip())
        return (header, *self.view(name, queue, item, ""))

    # -- the bulk grid ----------------------------------------------------------------------------

    def grid(self, queue_name: str, request: gr.Request | None, message: str = "") -> tuple[str, str, Any, str]:
        """Claim up to GRID_SIZE items and render them as numbered cards."""
        annotator = self.user(request)
        queue = self.queue(queue_name)
        if queue.kind == "groups":
            raise user_error(
                "Conflicting duplicates are decided one group at a time on the Annotate tab; "
                "pick the data set or the submissions for the grid."
            )
        items = self._run(lambda: queue.batch(annotator, GRID_SIZE))
        cards = []
        for n, item in enumerate(items, start=1):
            model = "" if item.model_age is None else f"model {item.model_age:.0f}"
            try:
                picture = inline_image(queue.image(item), f"Face {n}", 224)
            except Exception:  # an unreadable file: the card says so; mark it to give it back
                picture = "<p>cannot read this image: mark it</p>"
            cards.append(
                f'<div class="bulk-card" tabindex="0" data-n="{n}" data-id="{item.sample_id}">'
                f'<span class="bulk-num">{n}</span>{picture}'
                f'<div class="bulk-label">{_age(item.label)}</div><div class="bulk-model">{model}</div></div>'
            )
        body = (
            f'<div class="bulk-grid">{"".join(cards)}</div>'
            if cards
            else "**Nothing left for you in this queue.** Switch queues or come back later."
        )
        ids = ",".join(item.sample_id for item in items)
        choices = [str(n) for n in range(1, len(items) + 1)]
        return body, ids, gr.update(choices=choices, value=[]), f"{message}{self.progress(queue, annotator)}"

    def grid_confirm(self, queue_name: str, ids: str, marked: list[str] | None, request: gr.Request | None) -> tuple:
        """Confirm every card not marked (one transaction), give the marked ones back, load a new grid."""
        annotator = self.user(request)
        queue = self.queue(queue_name)
        on_screen = [i for i in (ids or "").split(",") if i]
        if not on_screen:
            raise user_error("No grid on screen: press New grid (G).")
        if len(on_screen) > GRID_SIZE:
            raise user_error(f"A grid holds at most {GRID_SIZE} items: press New grid (G).")
        wrong = {int(n) for n in (marked or []) if str(n).isdigit()}
        confirm = [(sample_id, None) for n, sample_id in enumerate(on_screen, start=1) if n not in wrong]
        votes = self._run(lambda: queue.submit_batch(annotator, confirm))
        queue.set_aside([on_screen[n - 1] for n in sorted(wrong) if 1 <= n <= len(on_screen)], annotator)
        message = (
            f"Confirmed {len(confirm)} label{'s' * (len(confirm) != 1)} ({len(votes)} votes)"
            f"{f'; the {len(wrong)} marked wrong wait for you on the Annotate tab' if wrong else ''}. "
            "U undoes one. "
        )
        return self.grid(queue_name, request, message)

    def grid_undo(self, queue_name: str, ids: str, request: gr.Request | None) -> tuple:
        annotator = self.user(request)
        queue = self.queue(queue_name)
        retraction, _ = self._run(lambda: queue.undo(annotator))
        return self.grid(
            queue_name, request, f"Undid your vote on `{retraction.sample_id[:12]}`: it is back in this grid. "
        )

    def close(self) -> None:
        if self.review is not None:
            self.review.stop()


# ----------------------------------------------------------------------------- the layout


def build_annotate_app(state: AppState, options: ServerOptions) -> gr.Blocks:
    """The /annotate page: Annotate, Bulk grid and Stats tabs. server.py mounts it behind the
    annotators' login with ``HEAD_PATHS`` (keyboard shortcuts) and ``CSS_PATHS``."""
    from age_model.ui.stats import build_stats_tab, start_scheduled_push

    backend = Annotator(state, options)
    choices = backend.queue_choices()
    with gr.Blocks(title="agecheck annotators") as page:
        gr.Markdown(
            "# agecheck annotators\nReview the labels the model suspects most; every decision is a vote "
            "that can be undone, nothing is overwritten."
        )
        with gr.Row(equal_height=True):
            whoami = gr.Markdown(elem_id="ann_whoami")
            gr.Button(
                "Log out",
                link="logout",
                link_target="_self",
                size="sm",
                scale=0,
                min_width=90,
                visible=backend.enabled,
                elem_id="ann_logout",
            )  # relative: /annotate/logout
        with gr.Row(equal_height=False, visible=backend.enabled):
            queue_name = gr.Radio(
                choices=choices, value=choices[0][1], label="Queue", elem_id="ann_queue_source", scale=2
            )
            progress = gr.Markdown(elem_id="ann_progress")
        with gr.Tab("Annotate", elem_id="ann_tab"):
            with gr.Column(visible=backend.enabled):  # without logins the page only says how to enable them
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        with gr.Row():
                            image = gr.HTML(elem_id="ann_image")
                            crop = gr.HTML(visible=False, elem_id="ann_crop")
                        info = gr.Markdown(elem_id="ann_info")
                    with gr.Column(scale=2):
                        with gr.Row():
                            label = gr.Number(label="Current label (years)", interactive=False, elem_id="ann_label")
                            model = gr.Textbox(label="Model estimate ± spread", interactive=False, elem_id="ann_model")
                        confirm = gr.Button("Confirm label  [C]", variant="primary", elem_id="ann_confirm")
                        age = gr.Number(
                            label="Age you see (years)",
                            minimum=AGE_RANGE[0],
                            maximum=AGE_RANGE[1],
                            precision=0,
                            elem_id="ann_age",
                        )
                        age_slider = gr.Slider(*AGE_RANGE, value=30, step=1, label="or drag", elem_id="ann_age_slider")
                        correct = gr.Button("Correct to this age  [Enter in the box]", elem_id="ann_correct")
                        with gr.Row():
                            skip = gr.Button("Skip  [S]", size="sm", min_width=60, elem_id="ann_skip")
                            undo = gr.Button("Undo last vote  [U]", size="sm", min_width=60, elem_id="ann_undo")
                            next_button = gr.Button("Next  [N]", size="sm", min_width=60, elem_id="ann_next")
                        message = gr.Markdown(elem_id="ann_message")
                votes = gr.Dataframe(
                    headers=VOTE_COLUMNS,
                    label="Earlier votes on this item",
                    interactive=False,
                    elem_id="ann_votes",
                    wrap=True,
                )
                sample_id = gr.Textbox(visible=False, elem_id="ann_sample_id")
        with gr.Tab("Bulk grid", elem_id="bulk_tab") as bulk_tab:
            with gr.Column(visible=backend.enabled):
                gr.Markdown(
                    f"Up to {GRID_SIZE} faces with their labels: **mark the wrong ones** (click, or keys "
                    "1-9, 0, -, =), then **Enter** confirms all the others in one go; the marked ones stay "
                    "yours and come first on the Annotate tab, to type the age you see."
                )
                with gr.Row():
                    grid_confirm = gr.Button("Confirm all unmarked  [Enter]", variant="primary", elem_id="bulk_confirm")
                    grid_load = gr.Button("New grid  [G]", size="sm", elem_id="bulk_load")
                    grid_undo = gr.Button("Undo last vote  [U]", size="sm", elem_id="bulk_undo")
                grid_message = gr.Markdown(elem_id="bulk_message")
                grid = gr.HTML(elem_id="bulk_grid")
                marks = gr.CheckboxGroup(choices=[], label="marked as wrong", elem_id="bulk_marks")
                grid_ids = gr.Textbox(visible=False, elem_id="bulk_ids")
        with gr.Tab("Stats", elem_id="stats_tab") as stats_tab:
            with gr.Column(visible=backend.enabled):
                build_stats_tab(backend, queue_name, stats_tab)
        gr.Markdown(SHORTCUTS, elem_id="ann_shortcuts")

        view = [sample_id, image, crop, info, label, model, age, age_slider, votes, progress, message]
        grid_view = [grid, grid_ids, marks, grid_message]
        many = dict(concurrency_limit=8, concurrency_id="annotate", show_progress="hidden")

        # Parameter names are the API's (gradio_client: /next, /confirm, /correct, /skip, /undo, /grid, /grid_confirm).
        def on_load(queue: str, request: gr.Request):
            try:
                user = backend.user(request)
            except gr.Error as error:
                return (f"**{error.message}**", *empty_view(error.message))
            header = f"Logged in as **{user}**. {backend.status_line()}"
            try:
                return (header, *backend.next(queue, None, request))
            except gr.Error as error:
                return (header, *empty_view(error.message))

        def next_item(queue: str, sample_id: str, request: gr.Request):
            return backend.next(queue, sample_id, request)

        def switch_queue(queue: str, sample_id: str, request: gr.Request):
            return backend.switch(queue, sample_id, request)

        def confirm_label(queue: str, sample_id: str, request: gr.Request):
            return backend.vote(queue, sample_id, None, request, confirm=True)

        def correct_label(queue: str, sample_id: str, age: float | None, request: gr.Request):
            return backend.vote(queue, sample_id, age, request, confirm=False)

        def skip_item(queue: str, sample_id: str, request: gr.Request):
            return backend.skip(queue, sample_id, request)

        def undo_vote(queue: str, sample_id: str, request: gr.Request):
            return backend.undo(queue, sample_id, request)

        def refresh(queue: str, sample_id: str, request: gr.Request):
            return backend.refresh(queue, sample_id, request)

        def load_grid(queue: str, request: gr.Request):
            return backend.grid(queue, request)

        def confirm_grid(queue: str, ids: str, marked: list[str], request: gr.Request):
            return backend.grid_confirm(queue, ids, marked, request)

        def undo_grid(queue: str, ids: str, request: gr.Request):
            return backend.grid_undo(queue, ids, request)

        page.load(on_load, inputs=queue_name, outputs=[whoami, *view], api_visibility="private", **many)
        next_button.click(next_item, inputs=[queue_name, sample_id], outputs=view, api_name="next", **many)
        queue_name.input(switch_queue, inputs=[queue_name, sample_id], outputs=view, api_visibility="private", **many)
        confirm.click(confirm_label, inputs=[queue_name, sample_id], outputs=view, api_name="confirm", **many)
        correct.click(correct_label, inputs=[queue_name, sample_id, age], outputs=view, api_name="correct", **many)
        age.submit(correct_label, inputs=[queue_name, sample_id, age], outputs=view, api_visibility="private", **many)
        skip.click(skip_item, inputs=[queue_name, sample_id], outputs=view, api_name="skip", **many)
        undo.click(undo_vote, inputs=[queue_name, sample_id], outputs=view, api_name="undo", **many)
        age.input(None, inputs=age, outputs=age_slider, js="(age) => age", api_visibility="private", queue=False)
        age_slider.input(None, inputs=age_slider, outputs=age, js="(age) => age", api_visibility="private", queue=False)
        bulk_tab.select(load_grid, inputs=queue_name, outputs=grid_view, api_visibility="private", **many)
        grid_load.click(load_grid, inputs=queue_name, outputs=grid_view, api_name="grid", **many)
        grid_confirm.click(
            confirm_grid, inputs=[queue_name, grid_ids, marks], outputs=grid_view, api_name="grid_confirm", **many
        )
        grid_undo.click(undo_grid, inputs=[queue_name, grid_ids], outputs=grid_view, api_visibility="private", **many)
        gr.Timer(REFRESH_S, active=backend.enabled).tick(
            refresh,
            inputs=[queue_name, sample_id],
            outputs=[whoami, *view],
            api_visibility="private",
            show_progress="hidden",
        )

    if state.store is not None and getattr(options, "push_feedback_to", None):
        start_scheduled_push(
            state.store, backend.folder / "hub_push", options.push_feedback_to, options.push_every_minutes
        )
    page.annotator = backend  # tests and server shutdown reach the backend here
    return page


def empty_view(message: str) -> tuple:
    return (
        "",
        None,
        gr.update(value=None, visible=False),
        "",
        None,
        "",
        None,
        gr.update(value=30),
        pd.DataFrame(columns=VOTE_COLUMNS),
        "",
        f"**{message}**",
    )
