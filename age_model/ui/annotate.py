"""The annotators' page at /annotate (behind login): review labels worst-first, and the Stats tab.

Two queues, picked with a selector:

- **Data set**: the folder given by ``--review`` (anything ``train.py`` reads), *all* splits
  concatenated: a wrong label in validation or test distorts the reported accuracy as much as one
  in train misleads training, and votes are keyed by the image's sha256 whatever the split.
- **Submissions**: the stakeholders' uploads and webcam captures in the feedback store.

Both are ``age_model.review.ReviewQueue``s, so items come most-suspected-error first
(``|model - label| / spread``, contested items before that), already-settled items and the
annotator's own votes are left out, and claims keep two annotators off the same item.

Scoring never blocks the page. The data set is loaded and scored by a background thread, in a
seeded random order so that what is scored so far is a fair sample; the queue ranks what is scored
and hands unscored rows out only after them. Scores are appended to a JSONL file per model beside
the store's database (``review_scores/<model>-<fingerprint>-<faces>.jsonl``: one line per sample
id), so a restart with the same model finds them at once. Data sets of photos (``faces ==
"detect"``) are scored on the largest face's crop, framed as the model was trained, and the page
shows that crop beside the photo; face-crop data sets and submissions (the Predict tab stores the
face crop) are scored as they are.

Every vote goes through the queue into the append-only store; undo appends a retraction. Nothing
here updates or deletes a vote.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from age_model.ui.errors import user_error
import pandas as pd

from age_model.review import Candidate, ReviewItem, ReviewQueue
from age_model.ui.state import AppState

logger = logging.getLogger(__name__)

SCORE_BATCH = 32  # faces per forward pass of the background scorer
FIRST_READY = 64  # the data set queue opens once this many rows (or all) are scored
WAIT_FOR_QUEUE = 20.0  # seconds a request waits for the data set to open before saying so
CLAIM_TTL = 300.0  # seconds an item stays reserved for the annotator who has it on screen (renewed by each look)
DATASET, SUBMISSIONS = "dataset", "submissions"
VOTE_COLUMNS = ["vote", "when (UTC)", "annotator", "age", "replaced", "note"]

HOW_TO_ENABLE = (
    "Annotation is switched off: no annotator logins are configured, and votes are never anonymous. "
    "Start the app with `python app.py --annotators FILE` (one `name:password` per line), or set "
    "`AGECHECK_ANNOTATORS='alice:pw1,bob:pw2'`, then log in at /annotate."
)

SHORTCUTS = ("Keys: **C** or **Enter** confirm · **0-9** type a corrected age, **Enter** saves it · **S** skip · "
             "**U** undo · **N** next · **Esc** leave a field")

# Keyboard shortcuts, added to the page's <head> by server.py (Gradio 6 takes custom JavaScript there).
ANNOTATE_HEAD = """<script>
(() => {
  if (window.agecheckAnnotateKeys) return;
  window.agecheckAnnotateKeys = true;
  const shown = (el) => el && el.offsetParent !== null;
  const press = (id) => {
    const button = document.getElementById(id);
    if (!shown(button) || button.disabled) return false;
    button.click();
    return true;
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target || {};
    const tag = target.tagName || "";
    const field = (tag === "INPUT" && !["radio", "checkbox", "button", "range"].includes(target.type))
      || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
    if (field) {  // Enter in the age box is the Number's own submit event: Correct
      if (event.key === "Escape") target.blur();
      return;
    }
    const age = document.querySelector("#ann_age input[type=number]");
    if (!shown(age)) return;  // another tab is open
    const key = event.key.toLowerCase();
    let done = false;
    if (key === "enter" || key === "c") done = press("ann_confirm");
    else if (key === "s") done = press("ann_skip");
    else if (key === "u") done = press("ann_undo");
    else if (key === "n") done = press("ann_next");
    else if (/^[0-9]$/.test(event.key)) {
      age.focus();
      age.value = event.key;
      age.dispatchEvent(new Event("input", { bubbles: true }));
      done = true;
    }
    if (done) event.preventDefault();
  });
})();
</script>"""

ANNOTATE_CSS = """
#ann_image img, #ann_crop img { object-fit: contain; max-height: 380px; max-width: 100%; }
#ann_label input, #ann_model textarea { font-size: 1.25rem; font-weight: 600; }
#ann_progress p { margin: 0; }
"""


# ----------------------------------------------------------------------------- where things live


def store_folder(store: Any) -> Path:
    """The folder of the store's database (SQLite), else the parent of its shared images folder."""
    location = store.location
    if location.backend == "sqlite":
        return Path(location.url.database).expanduser().resolve().parent
    return Path(location.images_dir).expanduser().resolve().parent


def model_key(model: str, version: str) -> str:
    """A file-name-safe key for a model's scores: its name plus a fingerprint of its files, so a
    retrained model in the same folder (new weights, new mtime) never reuses stale scores."""
    path = Path(model)
    digest = hashlib.sha256(str(path.resolve() if path.exists() else model).encode())
    if path.is_dir():
        for file in sorted(path.iterdir()):
            if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".pt", ".pth"}:
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    name = re.sub(r"[^\w.-]+", "_", version).strip("._")[:80] or "model"
    return f"{name}-{digest.hexdigest()[:12]}"


# ----------------------------------------------------------------------------- the score cache


class ScoreCache:
    """Model scores by sample id, append-only JSONL on disk (a torn last line is ignored)."""

    _open: dict[Path, ScoreCache] = {}
    _open_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.scores: dict[str, tuple[float | None, float | None]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.scores[str(row["id"])] = (row.get("age"), row.get("spread"))
                except (ValueError, KeyError, TypeError):
                    continue

    @classmethod
    def at(cls, path: Path) -> ScoreCache:
        """One cache object per file in this process (the data set and submissions may share one)."""
        with cls._open_lock:
            if path not in cls._open:
                cls._open[path] = cls(path)
            return cls._open[path]

    def add(self, rows: list[tuple[str, float | None, float | None]]) -> None:
        lines = "".join(json.dumps({"id": i, "age": None if a is None else round(float(a), 3),
                                    "spread": None if s is None else round(float(s), 3)}) + "\n" for i, a, s in rows)
        with self.lock:
            for sample_id, age, spread in rows:
                self.scores[sample_id] = (None if age is None else float(age), None if spread is None else float(spread))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(lines)
            except OSError as error:  # a read-only store folder: scores stay in memory only
                logger.warning("could not write review scores to %s: %s", self.path, error)


class SubmissionScores(Mapping):
    """``{sample_id: (age, spread)}`` for the submissions queue; a missing score is computed from the
    stored face crop on first look and cached (uploads arrive while the app runs)."""

    def __init__(self, store: Any, predictor: Any, cache: ScoreCache) -> None:
        self.store, self.predictor, self.cache = store, predictor, cache

    def __getitem__(self, sample_id: str) -> tuple[float | None, float | None]:
        if sample_id in self.cache.scores:
            return self.cache.scores[sample_id]
        try:
            from PIL import Image

            path = self.store.image_file(sample_id)
            if path is None:
                raise KeyError(sample_id)
            with Image.open(path) as image:
                ages, spreads = self.predictor.predict_crops([image.convert("RGB")])
            score = (float(ages[0]), float(spreads[0]))
        except KeyError:
            raise
        except Exception as error:  # an unreadable stored image: unscored, not a broken page
            logger.warning("could not score submission %s: %s", sample_id[:12], error)
            raise KeyError(sample_id) from None
        self.cache.add([(sample_id, *score)])
        return score

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.cache.scores))

    def __len__(self) -> int:
        return len(self.cache.scores)


# ----------------------------------------------------------------------------- the data set queue


class DatasetReview:
    """The ``--review`` data set, loaded and scored in a background thread.

    ``queue`` exists once the data set is loaded and the first ``FIRST_READY`` rows (or every row)
    are scored; it then ranks whatever is scored at the moment of each request.
    """

    def __init__(self, path: str, store: Any, predictor: Any, cache_dir: Path, model: str, model_version: str,
                 claim_ttl: float = CLAIM_TTL) -> None:
        self.path, self.store, self.predictor = path, store, predictor
        self.cache_dir, self.model, self.model_version, self.claim_ttl = cache_dir, model, model_version, claim_ttl
        self.name = Path(path).name or str(path)
        self.phase = "waiting"  # loading -> scoring -> scored | unscored (no model) | failed
        self.error: str | None = None
        self.faces = "cropped"
        self.dataset: Any = None
        self.queue: ReviewQueue | None = None
        self.cache: ScoreCache | None = None
        self.total = 0
        self.distinct = 0
        self.cached = 0  # rows whose score came from the cache file
        self.scored = 0  # rows scored so far (cache included)
        self.timings: dict[str, float] = {}
        self._ids: list[str] = []
        self._base: list[Candidate] = []
        self._candidates: list[Candidate] = []
        self._built_at = -1
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._build_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="agecheck-review-scorer", daemon=True)

    def start(self) -> DatasetReview:
        self._started = time.monotonic()
        self.thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> bool:
        """Ask the scorer to stop and wait for it; True once it has (a clean Ctrl-C needs that)."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def wait(self, timeout: float) -> bool:
        """True once the queue is open (or loading failed: see ``error``)."""
        return self._ready.wait(timeout)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
            self._score()
        except Exception as error:  # the page shows it; the submissions queue keeps working
            self.error = f"{type(error).__name__}: {error}".splitlines()[0]
            self.phase = "failed"
            logger.exception("review data set %s could not be prepared", self.path)
        finally:
            self._ready.set()

    def _load(self) -> None:
        import datasets

        from age_model.data import load_age_dataset

        self.phase = "loading"
        splits, report = load_age_dataset(self.path)
        self.dataset = datasets.concatenate_datasets([splits[name] for name in splits])
        self.faces = report.faces
        ds = self.dataset
        n = len(ds)
        self._ids = [str(x) for x in ds["id"]]
        labels = [None if a is None else float(a) for a in ds["age"]]
        sources = [str(s) for s in ds["source"]] if "source" in ds.column_names else [self.name] * n
        names = [str(x) for x in ds["file"]] if "file" in ds.column_names else [None] * n
        self._base = [Candidate(sample_id=self._ids[i], source=sources[i], index=i, original_label=labels[i],
                                original_name=names[i]) for i in range(n)]
        self.total = n
        self.distinct = len(set(self._ids))  # byte-identical copies are one sample (UTKFace has ~100)
        self.timings["loaded_s"] = time.monotonic() - self._started
        if self.predictor is not None:
            self.cache = ScoreCache.at(self.cache_dir / f"{model_key(self.model, self.model_version)}-{self.faces}.jsonl")
            self.cached = self.scored = sum(1 for i in self._ids if i in self.cache.scores)
        self.queue = ReviewQueue(self.store, self.candidates, dataset=ds, claim_ttl=self.claim_ttl,
                                 model_version=self.model_version)
        logger.info("review data set %s: %d faces (%s), %d scores cached, loaded in %.1f s",
                    self.path, n, self.faces, self.cached, self.timings["loaded_s"])

    def _score(self) -> None:
        if self.predictor is None or self.cache is None:
            self.phase = "unscored"
            self._ready.set()
            return
        self.phase = "scoring"
        todo = [i for i, sample_id in enumerate(self._ids) if sample_id not in self.cache.scores]
        random.Random(0).shuffle(todo)  # what is scored first is a fair sample of the data set
        if self.scored >= min(FIRST_READY, self.total):
            self._mark_ready()
        start = time.monotonic()
        for offset in range(0, len(todo), SCORE_BATCH):
            if self._stop.is_set():
                return
            batch = todo[offset:offset + SCORE_BATCH]
            self.cache.add(self._score_rows(batch))
            self.scored += len(batch)
            if self.scored >= min(FIRST_READY, self.total):
                self._mark_ready()
        self.phase = "scored"
        self.timings["scored_s"] = time.monotonic() - self._started
        if todo:
            logger.info("review data set %s: scored %d faces in %.0f s", self.path, len(todo), time.monotonic() - start)

    def _mark_ready(self) -> None:
        if not self._ready.is_set():
            self.timings["ready_s"] = time.monotonic() - self._started
            logger.info("review queue open after %.1f s (%d of %d faces scored)", self.timings["ready_s"], self.scored, self.total)
            self._ready.set()

    def _score_rows(self, rows: list[int]) -> list[tuple[str, float | None, float | None]]:
        """Scores of these rows; a row that cannot be read (or shows no face) is kept as unscored."""
        ids = [self._ids[i] for i in rows]
        try:
            images = [self.face_of(image) for image in self.dataset.select(rows)["image"]]
        except Exception:  # one broken file: go row by row
            images = []
            for i in rows:
                try:
                    images.append(self.face_of(self.dataset[i]["image"]))
                except Exception as error:
                    logger.warning("review: cannot read row %d (%s): %s", i, self._base[i].original_name, error)
                    images.append(None)
        present = [k for k, image in enumerate(images) if image is not None]
        out: list[tuple[str, float | None, float | None]] = [(sample_id, None, None) for sample_id in ids]
        if present:
            ages, spreads = self.predictor.predict_crops([images[k] for k in present])
            for k, age, spread in zip(present, ages, spreads):
                out[k] = (ids[k], float(age), float(spread))
        return out

    def face_of(self, image: Any) -> Any:
        """What the model sees: the image itself for crops, the largest face's crop for photos (None: no face)."""
        if self.faces != "detect":
            return image.convert("RGB")
        from age_model.faces import largest_face_crop

        return largest_face_crop(image, self.predictor.settings if self.predictor is not None else 0.4)

    # -- the queue's view --------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every row with the score it has now (rebuilt only when more rows were scored)."""
        with self._build_lock:
            if self._built_at != self.scored or not self._candidates:
                scores = self.cache.scores if self.cache is not None else {}
                built = []
                for c in self._base:
                    age, spread = scores.get(c.sample_id, (None, None))
                    built.append(c if age is None else Candidate(
                        sample_id=c.sample_id, source=c.source, index=c.index, original_label=c.original_label,
                        original_name=c.original_name, model_age=age, model_spread=spread))
                self._candidates, self._built_at = built, self.scored
            return self._candidates

    def status(self) -> str:
        """One line for the page: what is loaded and how far scoring got."""
        faces = f"{self.total:,} faces" + (f" ({self.distinct:,} distinct images)" if self.distinct != self.total else "")
        if self.phase in ("waiting", "loading"):
            return f"Loading data set `{self.name}`…"
        if self.phase == "failed":
            return f"Data set `{self.path}` could not be loaded: {self.error}"
        if self.phase == "unscored":
            return f"`{self.name}`: {faces}, no model loaded: items come in data set order."
        if self.scored < self.total:
            rate = ""
            done = self.scored - self.cached
            elapsed = time.monotonic() - self._started - self.timings.get("loaded_s", 0.0)
            if done > 0 and elapsed > 1:
                left_s = (self.total - self.scored) / (done / elapsed)
                rate = f", about {left_s / 60:.0f} min left" if left_s >= 90 else f", about {left_s:.0f} s left"
            return (f"`{self.name}`: {faces}, model scores for {self.scored:,} so far{rate}. "
                    "Items are ranked among the scored ones.")
        return f"`{self.name}`: {faces}, all scored by the model."


# ----------------------------------------------------------------------------- the page's logic


def inline_image(image: Any, alt: str, max_side: int = 512) -> str:
    """An ``<img>`` with the picture inside it (a JPEG data URI): it travels only in the logged-in
    page's own response, so no URL exists that a stranger could fetch."""
    picture = image.convert("RGB")
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="{html.escape(alt)}">'


class Annotator:
    """What the Annotate tab does, independent of its layout (the handlers call these)."""

    def __init__(self, state: AppState, options: Any) -> None:
        self.state = state
        self.options = options
        self.store = state.store
        self.enabled = bool(getattr(options, "annotators", None) or getattr(options, "hf_annotators", None))
        self.folder = store_folder(self.store) if self.store is not None else None
        self.review: DatasetReview | None = None
        self.submissions: ReviewQueue | None = None
        self.skipped: dict[tuple[str, str], set[str]] = defaultdict(set)
        predictor = state.predictor
        if self.store is not None:
            cache_dir = self.folder / "review_scores"
            scores = None
            if predictor is not None:
                scores = SubmissionScores(self.store, predictor, ScoreCache.at(
                    cache_dir / f"{model_key(state.model, state.model_version)}-cropped.jsonl"))
            self.submissions = ReviewQueue.for_submissions(self.store, predictions=scores, claim_ttl=CLAIM_TTL,
                                                           model_version=state.model_version)
            if options.review:
                self.review = DatasetReview(options.review, self.store, predictor, cache_dir, state.model,
                                            state.model_version).start()
                state.stoppers.append(self.review.stop)

    # -- who, which queue ----------------------------------------------------------------------

    def queue_choices(self) -> list[tuple[str, str]]:
        choices = [(f"Data set: {self.review.name}", DATASET)] if self.review is not None else []
        return choices + [("Submissions (uploads and webcam)", SUBMISSIONS)]

    def user(self, request: gr.Request | None) -> str:
        """The logged-in annotator; without logins every vote action refuses."""
        name = getattr(request, "username", None)
        if not name:
            raise user_error(HOW_TO_ENABLE if not self.enabled else "Log in at /annotate first.")
        if self.store is None:
            self.state.require_store()
        return str(name)

    def queue(self, name: str | None) -> ReviewQueue:
        """The chosen queue; the data set's waits a little for its first scores, then says why not."""
        if name == SUBMISSIONS or (name != DATASET and self.review is None):
            if self.submissions is None:
                self.state.require_store()
            return self.submissions  # type: ignore[return-value]
        if self.review is None:
            raise user_error("No data set to review: start the app with `--review DATA` (any folder train.py reads).")
        self.review.wait(WAIT_FOR_QUEUE)
        if self.review.phase == "failed":
            raise user_error(self.review.status())
        if self.review.queue is None or not self.review._ready.is_set():
            raise user_error(f"{self.review.status()} The first items are not ready yet: press Next (N) in a few seconds.")
        return self.review.queue

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

    # -- items ---------------------------------------------------------------------------------

    def claim_next(self, queue: ReviewQueue, annotator: str, queue_name: str) -> tuple[ReviewItem | None, str]:
        """Claim the next item (one already held first), passing over what this annotator skipped
        until nothing else is left."""
        skipped = self.skipped[(annotator, queue_name)]
        items = queue.items(annotator)
        ordered = [i for i in items if i.claimed_until is not None] + [i for i in items if i.claimed_until is None]
        for item in ordered:
            if item.sample_id not in skipped and self.store.claim(item.sample_id, annotator, ttl=queue.claim_ttl):
                return item, ""
        for item in ordered:
            if item.sample_id in skipped and self.store.claim(item.sample_id, annotator, ttl=queue.claim_ttl):
                skipped.clear()
                return item, "You have skipped every other item: here come the skipped ones again. "
        return None, ""

    def find(self, queue: ReviewQueue, sample_id: str, annotator: str) -> ReviewItem | None:
        return next((i for i in queue.items(annotator) if i.sample_id == sample_id), None)

    def view(self, annotator: str, queue_name: str, item: ReviewItem | None, message: str) -> tuple:
        """Everything the tab shows, in the order of ``VIEW_OUTPUTS``."""
        queue = self.queue(queue_name)
        progress = self.progress(queue, annotator, queue_name)
        if item is None:
            empty = pd.DataFrame(columns=VOTE_COLUMNS)
            info = ("**Nothing left for you in this queue.** Every item is settled, already has your vote, or is "
                    "being reviewed by someone else right now. Press Next (N) to look again, or switch queues.")
            return ("", "", gr.update(value="", visible=False), info, None, "", None, gr.update(value=30),
                    empty, progress, message)
        image = queue.image(item)
        crop = None
        if queue is getattr(self.review, "queue", None) and self.review is not None and self.review.faces == "detect":
            try:
                crop = self.review.face_of(image)
            except Exception:  # a photo without a detectable face: the photo alone
                crop = None
        label = None if item.label is None else round(float(item.label), 1)
        if item.model_age is None:
            model = "not scored yet" if self.state.predictor is not None else "no model loaded"
        else:
            spread = "" if item.model_spread is None else f" ± {item.model_spread:.1f}"
            model = f"{item.model_age:.1f}{spread}"
        start = label if label is not None else (None if item.model_age is None else round(item.model_age))
        return (item.sample_id, inline_image(image, "Image under review"),
                gr.update(value=inline_image(crop, "Face the model sees") if crop is not None else "", visible=crop is not None),
                self.describe(queue, item), label, model, start, gr.update(value=start if start is not None else 30),
                self.vote_table(item.sample_id), progress, message)

    def describe(self, queue: ReviewQueue, item: ReviewItem) -> str:
        cand = next((c for c in queue.candidates() if c.sample_id == item.sample_id), None)
        name = f" · `{cand.original_name}`" if cand is not None and cand.original_name else ""
        status = str(item.status).replace("_", " ")
        votes = "no votes yet" if item.num_votes == 0 else f"{item.num_votes} vote{'s' * (item.num_votes != 1)}"
        why = "" if item.score is None else f" · suspicion {item.score:.1f} (|model − label| / spread)"
        source = "original label" if item.num_votes == 0 and item.source not in ("upload", "webcam") else "current label"
        return (f"**{item.source}**{name} · sample `{item.sample_id[:12]}` · **{status}**, {votes}{why}  \n"
                f"Shown: the {source}; confirm it if the face looks that age, otherwise type the age you see.")

    def vote_table(self, sample_id: str) -> pd.DataFrame:
        rows = []
        for v in self.store.votes(sample_id):
            age = "" if v.age is None else f"{round(v.age, 1):g}"
            what = f"#{v.id}" if v.kind == "vote" else f"#{v.id} undoes #{v.retracts}"
            replaced = "" if v.previous_label is None else f"{round(v.previous_label, 1):g}"
            rows.append([what, v.created_at.strftime("%Y-%m-%d %H:%M"), v.annotator, age, replaced, v.note or ""])
        return pd.DataFrame(rows, columns=VOTE_COLUMNS)

    def progress(self, queue: ReviewQueue, annotator: str, queue_name: str) -> str:
        p = queue.progress()
        contested = p.by_status.get("needs_another_look", 0) + p.by_status.get("pending_second_opinion", 0)
        mine = p.per_annotator.get(annotator, 0)
        what = f"Data set `{self.review.name}`" if queue_name == DATASET and self.review is not None else "Submissions"
        return (f"**{what}**: {p.done:,} of {p.total:,} done (settled), **{p.left:,} left**"
                f"{f', {contested:,} waiting for another opinion' if contested else ''} · "
                f"**{annotator}**: {mine:,} vote{'s' * (mine != 1)} here")

    # -- actions -------------------------------------------------------------------------------

    def next(self, queue_name: str, request: gr.Request | None, message: str = "") -> tuple:
        annotator = self.user(request)
        queue = self.queue(queue_name)
        item, note = self.claim_next(queue, annotator, queue_name)
        return self.view(annotator, queue_name, item, note + message)

    def switch(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        annotator = self.user(request)
        if sample_id:
            self.store.release(sample_id, annotator)
        return self.next(queue_name, request)

    def _vote(self, queue_name: str, sample_id: str | None, age: Any, request: gr.Request | None, confirm: bool) -> tuple:
        from age_model.feedback import FeedbackError

        annotator = self.user(request)
        queue = self.queue(queue_name)
        if not sample_id:
            raise user_error("No item on screen: press Next (N).")
        holder = self.store.active_claims().get(sample_id)
        if holder is not None and holder[0] != annotator:
            raise user_error(f"{holder[0]} is reviewing this item right now: press Next (N) for another one.")
        cand = next((c for c in queue.candidates() if c.sample_id == sample_id), None)
        if cand is None:
            raise user_error("This item is not in the selected queue: press Next (N).")
        label = self.store.labels([sample_id]).get(sample_id)
        if label is not None and annotator in label.annotators:
            raise user_error("You have already voted on this item. Undo (U) takes your last vote back; Next (N) moves on.")
        if confirm:
            age = label.age if label is not None and label.age is not None else cand.original_label
            if age is None:
                raise user_error("This item has no label to confirm: type the age you see and press Correct (Enter).")
        elif age is None or age == "":
            raise user_error("Type the age you see (0-120 years), then press Correct or Enter.")
        try:
            vote = queue.submit(sample_id, age, annotator)
        except FeedbackError as error:
            raise user_error(str(error)) from None
        self.skipped[(annotator, queue_name)].discard(sample_id)
        done = "Confirmed" if confirm else "Corrected to"
        return self.next(queue_name, request, f"{done} {vote.age:g} (sample `{sample_id[:12]}`, vote #{vote.id}). U undoes it.")

    def confirm(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        return self._vote(queue_name, sample_id, None, request, confirm=True)

    def correct(self, queue_name: str, sample_id: str | None, age: Any, request: gr.Request | None) -> tuple:
        return self._vote(queue_name, sample_id, age, request, confirm=False)

    def skip(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        annotator = self.user(request)
        queue = self.queue(queue_name)
        if sample_id:
            queue.skip(sample_id, annotator)
            self.skipped[(annotator, queue_name)].add(sample_id)
        return self.next(queue_name, request, f"Skipped `{sample_id[:12]}`: it goes back to the queue." if sample_id else "")

    def undo(self, queue_name: str, sample_id: str | None, request: gr.Request | None) -> tuple:
        """Retract this annotator's latest vote (anywhere) and put that item back on screen if it is in this queue."""
        from age_model.feedback import FeedbackError

        annotator = self.user(request)
        queue = self.queue(queue_name)
        try:
            retraction = self.store.undo(annotator, note="undone in the Annotate tab")
        except FeedbackError as error:
            raise user_error(str(error)) from None
        undone = retraction.sample_id
        message = f"Undid your vote on `{undone[:12]}` (vote #{retraction.retracts}; it stays in the history as undone)."
        if any(c.sample_id == undone for c in queue.candidates()) and self.store.claim(undone, annotator, ttl=queue.claim_ttl):
            if sample_id and sample_id != undone:
                self.store.release(sample_id, annotator)
            self.skipped[(annotator, queue_name)].discard(undone)
            item = self.find(queue, undone, annotator)
            if item is not None:
                return self.view(annotator, queue_name, item, message + " Vote on it again.")
        if sample_id:
            item = self.find(queue, sample_id, annotator)
            if item is not None and self.store.claim(sample_id, annotator, ttl=queue.claim_ttl):
                return self.view(annotator, queue_name, item, message)
        return self.next(queue_name, request, message)

    def close(self) -> None:
        if self.review is not None:
            self.review.stop()


# ----------------------------------------------------------------------------- the layout


def build_annotate_app(state: AppState, options: Any) -> gr.Blocks:
    """The /annotate page: Annotate and Stats tabs. server.py mounts it behind the annotators' login
    and adds ``ANNOTATE_HEAD`` (keyboard shortcuts) and ``ANNOTATE_CSS`` to its page."""
    from age_model.ui.stats import build_stats_tab, start_scheduled_push

    backend = Annotator(state, options)
    choices = backend.queue_choices()
    with gr.Blocks(title="agecheck annotators") as page:
        gr.Markdown("# agecheck annotators\nReview the labels the model suspects most; every decision is a vote "
                    "that can be undone, nothing is overwritten.")
        with gr.Row(equal_height=True):
            whoami = gr.Markdown(elem_id="ann_whoami")
            gr.Button("Log out", link="logout", link_target="_self", size="sm", scale=0, min_width=90,
                      visible=backend.enabled, elem_id="ann_logout")  # relative: /annotate/logout
        with gr.Tab("Annotate", elem_id="ann_tab"):
            with gr.Column(visible=backend.enabled):  # without logins the page only says how to enable them
                with gr.Row(equal_height=False):
                    queue_name = gr.Radio(choices=choices, value=choices[0][1], label="Queue", elem_id="ann_queue_source", scale=2)
                    progress = gr.Markdown(elem_id="ann_progress")
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        with gr.Row():
                            # Inline images, never files: Gradio's file cache is shared with the public page,
                            # which would serve any cached face to whoever has its URL.
                            image = gr.HTML(elem_id="ann_image")
                            crop = gr.HTML(visible=False, elem_id="ann_crop")
                        info = gr.Markdown(elem_id="ann_info")
                    with gr.Column(scale=2):
                        with gr.Row():
                            label = gr.Number(label="Current label (years)", interactive=False, elem_id="ann_label")
                            model = gr.Textbox(label="Model estimate ± spread", interactive=False, elem_id="ann_model")
                        confirm = gr.Button("Confirm label  [C]", variant="primary", elem_id="ann_confirm")
                        age = gr.Number(label="Age you see (years)", minimum=0, maximum=120, precision=0, elem_id="ann_age")
                        age_slider = gr.Slider(0, 120, value=30, step=1, label="or drag", elem_id="ann_age_slider")
                        correct = gr.Button("Correct to this age  [Enter in the box]", elem_id="ann_correct")
                        with gr.Row():
                            skip = gr.Button("Skip  [S]", size="sm", min_width=60, elem_id="ann_skip")
                            undo = gr.Button("Undo last vote  [U]", size="sm", min_width=60, elem_id="ann_undo")
                            next_button = gr.Button("Next  [N]", size="sm", min_width=60, elem_id="ann_next")
                        message = gr.Markdown(elem_id="ann_message")
                votes = gr.Dataframe(headers=VOTE_COLUMNS, label="Earlier votes on this item", interactive=False,
                                     elem_id="ann_votes", wrap=True)
                gr.Markdown(SHORTCUTS, elem_id="ann_shortcuts")
                sample_id = gr.Textbox(visible=False, elem_id="ann_sample_id")
        with gr.Tab("Stats", elem_id="stats_tab") as stats_tab:
            with gr.Column(visible=backend.enabled):
                build_stats_tab(backend, queue_name, stats_tab)

        view = [sample_id, image, crop, info, label, model, age, age_slider, votes, progress, message]
        many = dict(concurrency_limit=8, concurrency_id="annotate", show_progress="hidden")

        # Parameter names are the API's (gradio_client: /next, /confirm, /correct, /skip, /undo).
        def on_load(queue: str, request: gr.Request):
            try:
                user = backend.user(request)
            except gr.Error as error:
                return (f"**{error.message}**", *empty_view(error.message))
            header = f"Logged in as **{user}**. {backend.status_line()}"
            try:
                return (header, *backend.next(queue, request))
            except gr.Error as error:
                return (header, *empty_view(error.message))

        def next_item(queue: str, request: gr.Request):
            return backend.next(queue, request)

        def switch_queue(queue: str, sample_id: str, request: gr.Request):
            return backend.switch(queue, sample_id, request)

        def confirm_label(queue: str, sample_id: str, request: gr.Request):
            return backend.confirm(queue, sample_id, request)

        def correct_label(queue: str, sample_id: str, age: float | None, request: gr.Request):
            return backend.correct(queue, sample_id, age, request)

        def skip_item(queue: str, sample_id: str, request: gr.Request):
            return backend.skip(queue, sample_id, request)

        def undo_vote(queue: str, sample_id: str, request: gr.Request):
            return backend.undo(queue, sample_id, request)

        def refresh_status(request: gr.Request):
            return f"Logged in as **{request.username}**. {backend.status_line()}" if getattr(
                request, "username", None) else f"**{HOW_TO_ENABLE}**"

        page.load(on_load, inputs=queue_name, outputs=[whoami, *view], api_visibility="private", **many)
        next_button.click(next_item, inputs=queue_name, outputs=view, api_name="next", **many)
        queue_name.input(switch_queue, inputs=[queue_name, sample_id], outputs=view, api_visibility="private", **many)
        confirm.click(confirm_label, inputs=[queue_name, sample_id], outputs=view, api_name="confirm", **many)
        correct.click(correct_label, inputs=[queue_name, sample_id, age], outputs=view, api_name="correct", **many)
        age.submit(correct_label, inputs=[queue_name, sample_id, age], outputs=view, api_visibility="private", **many)
        skip.click(skip_item, inputs=[queue_name, sample_id], outputs=view, api_name="skip", **many)
        undo.click(undo_vote, inputs=[queue_name, sample_id], outputs=view, api_name="undo", **many)
        age.input(None, inputs=age, outputs=age_slider, js="(age) => age", api_visibility="private", queue=False)
        age_slider.input(None, inputs=age_slider, outputs=age, js="(age) => age", api_visibility="private", queue=False)
        gr.Timer(15, active=backend.review is not None).tick(refresh_status, outputs=whoami, api_visibility="private",
                                                             show_progress="hidden")

    if state.store is not None and getattr(options, "push_feedback_to", None):
        start_scheduled_push(state.store, backend.folder / "hub_push", options.push_feedback_to, options.push_every_minutes)
    page.annotator = backend  # tests and server shutdown reach the backend here
    return page


def empty_view(message: str) -> tuple:
    return ("", None, gr.update(value=None, visible=False), "", None, "", None, gr.update(value=30),
            pd.DataFrame(columns=VOTE_COLUMNS), "", f"**{message}**")
