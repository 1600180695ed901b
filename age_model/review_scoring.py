"""The review data set behind ``app.py --review``: loaded, queued and scored in the background.

:class:`DatasetReview` opens its queue as soon as the data set's ids and labels are read (every
split: a wrong label in validation or test distorts the reported accuracy as much as one in train
misleads training), before any model score exists: unscored items are handed out ranked by what
is cheap (see ``age_model.review``). A background thread then finds the near-duplicate groups
whose labels conflict (``age_model.data.conflicting_groups``: a second queue, one decision per
group) and scores every face with the model, in a seeded random order so that what is scored so
far is a fair sample; each batch of scores goes into the queue at once (``ReviewQueue.set_scores``).

Scores are appended to a JSONL file per model beside the store's database
(``review_scores/<model>-<fingerprint>-<faces>.jsonl``: one line per sample id), so a restart
with the same model finds them at once. Data sets of photos (``faces == "detect"``) are scored on
the largest face's crop, framed as the model was trained; face-crop data sets and submissions
(the Predict tab stores the face crop) are scored as they are.

Nothing here needs Gradio: the Annotate page renders what this holds; tests and
``bench/annotate.py`` drive it directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from age_model.review import ReviewQueue, dataset_candidates

if TYPE_CHECKING:
    from PIL import Image

    from age_model.feedback import FeedbackStore
    from age_model.predictor import AgePredictor

logger = logging.getLogger(__name__)

SCORE_BATCH = 32  # faces per forward pass of the background scorer
SCORE_DELAY_S = 15.0  # scoring waits this long after the queue opens, or until an annotator shows up (go()),
# so that a starting server gets the CPU first (measured: scoring during start-up delayed it by 5 s on 2 cores)
CLAIM_TTL = 300.0  # seconds an item stays reserved for the annotator who has it on screen (renewed by each look)


def store_folder(store: FeedbackStore) -> Path:
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
            if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".pt", ".pth", ".onnx"}:
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    name = re.sub(r"[^\w.-]+", "_", version).strip("._")[:80] or "model"
    return f"{name}-{digest.hexdigest()[:12]}"


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
        lines = "".join(
            json.dumps(
                {
                    "id": i,
                    "age": None if a is None else round(float(a), 3),
                    "spread": None if s is None else round(float(s), 3),
                }
            )
            + "\n"
            for i, a, s in rows
        )
        with self.lock:
            for sample_id, age, spread in rows:
                self.scores[sample_id] = (
                    None if age is None else float(age),
                    None if spread is None else float(spread),
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(lines)
            except OSError as error:  # a read-only store folder: scores stay in memory only
                logger.warning("could not write review scores to %s: %s", self.path, error)


class SubmissionScores(Mapping):
    """``{sample_id: (age, spread)}`` for the submissions queue; a missing score is computed from the
    stored face crop on first look and cached (uploads arrive while the app runs)."""

    def __init__(
        self, store: FeedbackStore, predictor: AgePredictor, cache: ScoreCache, compute_missing: bool = True
    ) -> None:
        """``compute_missing=False`` while a queue starts: uploads without a cached score then rank by the
        model estimate recorded with their vote, so a start never waits for a model run per upload."""
        self.store, self.predictor, self.cache = store, predictor, cache
        self.compute_missing = compute_missing

    def __getitem__(self, sample_id: str) -> tuple[float | None, float | None]:
        if sample_id in self.cache.scores:
            return self.cache.scores[sample_id]
        if not self.compute_missing:
            raise KeyError(sample_id)
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


class DatasetReview:
    """The ``--review`` data set: ``queue`` opens once ids and labels are read, ``groups`` (the
    conflicting near-duplicates) once they are found; the model scores the rest meanwhile."""

    def __init__(
        self,
        path: str,
        store: FeedbackStore,
        predictor: AgePredictor,
        cache_dir: Path,
        model: str,
        model_version: str,
        claim_ttl: float = CLAIM_TTL,
        find_conflicts: bool = True,
    ) -> None:
        self.path, self.store, self.predictor = path, store, predictor
        self.cache_dir, self.model, self.model_version, self.claim_ttl = cache_dir, model, model_version, claim_ttl
        self.find_conflicts = find_conflicts
        self.name = Path(path).name or str(path)
        self.phase = "waiting"  # loading -> conflicts -> scoring -> scored | unscored (no model) | failed
        self.error: str | None = None
        self.faces = "cropped"
        self.dataset: Any = None
        self.queue: ReviewQueue | None = None
        self.groups: ReviewQueue | None = None
        self.cache: ScoreCache | None = None
        self.total = 0
        self.distinct = 0
        self.cached = 0  # rows whose score came from the cache file
        self.scored = 0  # rows scored so far (cache included)
        self.timings: dict[str, float] = {}
        self._ids: list[str] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._go = threading.Event()
        self._started = time.monotonic()
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

    def go(self) -> None:
        """Start scoring now (someone is reviewing) instead of after ``SCORE_DELAY_S``."""
        self._go.set()

    def wait(self, timeout: float) -> bool:
        """True once the queue is open (or loading failed: see ``error``)."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
            self._ready.set()
            if self.find_conflicts:
                self._conflicts()
            self._score()
        except Exception as error:  # the page shows it; the submissions queue keeps working
            self.error = f"{type(error).__name__}: {error}".splitlines()[0]
            self.phase = "failed"
            logger.exception("review data set %s could not be prepared", self.path)
        finally:
            self._ready.set()

    def _load(self) -> None:
        import datasets

        from age_model.data import LoadOptions, load_age_dataset

        self.phase = "loading"
        # Near-duplicates are looked for after the queue opens (_conflicts); every copy is kept. Images are
        # not decoded here (0.5-1 s at UTKFace's size): the scorer and the page cope with an unreadable one.
        splits, report = load_age_dataset(
            self.path, LoadOptions(find_duplicates=False, cross_split_duplicates="keep", verify_images=False)
        )
        self.dataset = datasets.concatenate_datasets([splits[name] for name in splits])
        self.faces = report.faces
        source = None if "source" in self.dataset.column_names else self.name
        candidates = dataset_candidates(self.dataset, source)
        self._ids = [c.sample_id for c in candidates]
        self.total = len(candidates)
        self.distinct = len(set(self._ids))  # byte-identical copies are one sample (UTKFace has ~100)
        self.timings["loaded_s"] = time.monotonic() - self._started
        self.queue = ReviewQueue(
            self.store, candidates, dataset=self.dataset, claim_ttl=self.claim_ttl, model_version=self.model_version
        )
        if self.predictor is not None:
            self.cache = ScoreCache.at(
                self.cache_dir / f"{model_key(self.model, self.model_version)}-{self.faces}.jsonl"
            )
            known = {i: self.cache.scores[i] for i in self._ids if i in self.cache.scores}
            self.cached = self.scored = len(known)
            self.queue.set_scores(known)
        self.timings["ready_s"] = time.monotonic() - self._started
        logger.info(
            "review data set %s: %d faces (%s), %d scores cached, queue open after %.1f s",
            self.path,
            self.total,
            self.faces,
            self.cached,
            self.timings["ready_s"],
        )

    def _conflicts(self) -> None:
        from age_model.data import conflicting_groups

        self.phase = "conflicts"
        groups = conflicting_groups(self.dataset)
        groups_queue = ReviewQueue.for_groups(
            self.store, groups, dataset=self.dataset, claim_ttl=self.claim_ttl, model_version=self.model_version
        )
        if self.cache is not None:
            groups_queue.set_scores({i: self.cache.scores[i] for i in self._ids if i in self.cache.scores})
        self.groups = groups_queue
        self.timings["groups_s"] = time.monotonic() - self._started
        logger.info("review data set %s: %d conflicting near-duplicate groups", self.path, len(self.groups))

    def _score(self) -> None:
        if self.predictor is None or self.cache is None:
            self.phase = "unscored"
            return
        self.phase = "scoring"
        deadline = time.monotonic() + SCORE_DELAY_S
        while not self._go.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
            self._go.wait(0.2)
        todo = [i for i, sample_id in enumerate(self._ids) if sample_id not in self.cache.scores]
        random.Random(0).shuffle(todo)  # what is scored first is a fair sample of the data set
        start = time.monotonic()
        for offset in range(0, len(todo), SCORE_BATCH):
            if self._stop.is_set():
                return
            rows = self._score_rows(todo[offset : offset + SCORE_BATCH])
            self.cache.add(rows)
            scores = {sample_id: (age, spread) for sample_id, age, spread in rows}
            for queue in (self.queue, self.groups):
                if queue is not None:
                    queue.set_scores(scores)
            self.scored += len(rows)
            time.sleep(0.005)  # let request threads take the interpreter between batches
        self.phase = "scored"
        self.timings["scored_s"] = time.monotonic() - self._started
        if todo:
            logger.info("review data set %s: scored %d faces in %.0f s", self.path, len(todo), time.monotonic() - start)

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
                    logger.warning("review: cannot read row %d: %s", i, error)
                    images.append(None)
        present = [k for k, image in enumerate(images) if image is not None]
        out: list[tuple[str, float | None, float | None]] = [(sample_id, None, None) for sample_id in ids]
        if present:
            ages, spreads = self.predictor.predict_crops([images[k] for k in present])
            for k, age, spread in zip(present, ages, spreads):
                out[k] = (ids[k], float(age), float(spread))
        return out

    def face_of(self, image: Image.Image) -> Image.Image | None:
        """What the model sees: the image itself for crops, the largest face's crop for photos (None: no face)."""
        if self.faces != "detect":
            return image.convert("RGB")
        from age_model.faces.crops import DEFAULT_CROP, largest_face_crop

        return largest_face_crop(image, self.predictor.settings.crop if self.predictor is not None else DEFAULT_CROP)

    def status(self) -> str:
        """One line for the page: what is loaded and how far scoring got."""
        faces = f"{self.total:,} faces" + (
            f" ({self.distinct:,} distinct images)" if self.distinct != self.total else ""
        )
        if self.phase in ("waiting", "loading"):
            return f"Loading data set `{self.name}`…"
        if self.phase == "failed":
            return f"Data set `{self.path}` could not be loaded: {self.error}"
        groups = (
            ""
            if self.groups is None
            else f", {len(self.groups):,} conflicting duplicate group{'s' * (len(self.groups) != 1)}"
        )
        if self.phase == "conflicts":
            return f"`{self.name}`: {faces}; looking for conflicting duplicates…"
        if self.phase == "unscored":
            return (
                f"`{self.name}`: {faces}{groups}, no model loaded: items come by how near their label is to 18 or 25."
            )
        if self.scored < self.total:
            rate = ""
            done = self.scored - self.cached
            elapsed = time.monotonic() - self._started - self.timings.get("groups_s", self.timings.get("loaded_s", 0.0))
            if done > 0 and elapsed > 1:
                left_s = (self.total - self.scored) / (done / elapsed)
                rate = f", about {left_s / 60:.0f} min left" if left_s >= 90 else f", about {left_s:.0f} s left"
            return (
                f"`{self.name}`: {faces}{groups}, model scores for {self.scored:,} so far{rate}; "
                "unscored items come between the suspicious and the likely right ones."
            )
        return f"`{self.name}`: {faces}{groups}, all scored by the model."
