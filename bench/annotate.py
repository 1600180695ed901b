"""Speed of the review loop at scale: per-click latency of the review queue on SQLite and PostgreSQL,
and how soon the Annotate page has a first item from a cold start and a restart.

    python bench/annotate.py [--items 30000] [--votes 10000] [--rounds 150] [--backends sqlite,postgresql]
                             [--data ../shared/data/utkface] [--model models/agecheck-default]

Part 1 (per backend): a store with ``--items`` registered samples and ``--votes`` votes from five
annotators (a tenth of them far off, so some items are contested), a queue over every item with
model scores, then ``--rounds`` rounds of what an annotator does: next, confirm, next, correct,
Next on the item on screen (moves on), skip, undo. Each action is timed through the same
``ReviewQueue`` calls the page makes (the store write included), p50 / p95 in ms. "open" is a
restart: building the queue from the store (every vote read once) and claiming the first item.
SQLite runs with the store's own settings (WAL, synchronous=FULL); PostgreSQL 15 is started in a
temporary folder as the ``postgres`` user with its default durability (fsync on).

Part 2 (with ``--data``): the ``--review`` data set path of the app, ``DatasetReview``: seconds
until the first item is claimed with an empty score cache (load, queue, no score yet), then a
restart with the scores the first run cached while it was scoring for ``--score-seconds``. Part 3:
the same through the app itself (``python app.py --review DATA`` in a subprocess, an annotator
logged in with gradio_client): seconds from launch to the first HTTP answer and to the first item.

Prints markdown and the machine. Writes only to temporary folders; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from age_model.feedback import FeedbackStore  # noqa: E402
from age_model.review import Candidate, ReviewQueue  # noqa: E402

ACTIONS = ("next", "confirm", "correct", "next (moves on)", "skip", "undo")
ANNOTATORS = ("ann", "bob", "carol", "dan", "eve")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=30_000, help="samples in the queue (default 30000)")
    parser.add_argument("--votes", type=int, default=10_000, help="votes already in the store (default 10000)")
    parser.add_argument("--rounds", type=int, default=150, help="rounds of the seven actions (default 150)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--data", default=None, help="data set for the cold-start part (e.g. ../shared/data/utkface)")
    parser.add_argument(
        "--model", default=None, help="model for the cold-start part (default: $AGE_MODEL, else the shipped one)"
    )
    parser.add_argument(
        "--score-seconds", type=float, default=20.0, help="scoring time before the restart (default 20)"
    )
    parser.add_argument("--app-only", action="store_true", help="only part 3, the app from launch (needs --data)")
    return parser.parse_args()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


class Postgres:
    """A throwaway PostgreSQL cluster with default durability, run as ``postgres`` when we are root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="agecheck-bench-pg-"))
        self.as_user = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.data = self.root / "data"

    def tool(self, name: str) -> str:
        found = shutil.which(name) or next(
            (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
        )
        if found is None:
            raise RuntimeError(f"{name} not found: install PostgreSQL 15 (see ../shared/TESTING.md)")
        return found

    def __enter__(self) -> str:
        run = lambda *args: subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
        run(self.tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "agecheck", "-E", "UTF8")
        run(
            self.tool("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        return f"postgresql://agecheck@127.0.0.1:{self.port}/postgres?images_dir={self.root}/images"

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [*self.as_user, self.tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def synthetic(n: int) -> tuple[list[Candidate], dict[str, tuple[float, float]]]:
    """n candidates with labels 1-90 and model scores that mostly agree with them."""
    rng = random.Random(0)
    cands, scores = [], {}
    for i in range(n):
        sample_id = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        label = float(rng.randint(1, 90))
        cands.append(
            Candidate(sample_id=sample_id, source="bench", index=None, original_label=label, original_name=f"{i}.jpg")
        )
        scores[sample_id] = (max(0.0, label + rng.gauss(0, 6)), rng.uniform(2, 8))
    return cands, scores


def seed(store: FeedbackStore, cands: list[Candidate], votes: int) -> float:
    """Register every sample and append the votes; returns the seconds it took."""
    start = time.perf_counter()
    for offset in range(0, len(cands), 5000):
        store.register_samples(
            [
                dict(
                    sample_id=c.sample_id,
                    source=c.source,
                    original_name=c.original_name,
                    original_label=c.original_label,
                )
                for c in cands[offset : offset + 5000]
            ]
        )
    rng = random.Random(1)
    records = []
    for k in range(votes):
        cand = cands[k % len(cands) if votes <= len(cands) else rng.randrange(len(cands))]
        off = rng.choice([0, 0, 0, 1, -1, 2]) if rng.random() > 0.1 else rng.choice([-15, 12, 20])
        records.append(
            dict(
                sample_id=cand.sample_id,
                age=min(100.0, max(0.0, cand.original_label + off)),
                annotator=ANNOTATORS[k % len(ANNOTATORS)],
            )
        )
    # two annotators per sample on the first items so that some are contested or pending
    for offset in range(0, len(records), 2000):
        store.add_votes(records[offset : offset + 2000])
    return time.perf_counter() - start


def time_actions(queue: ReviewQueue, rounds: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {a: [] for a in ACTIONS}
    me = "bench"

    def timed(action: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[action].append(time.perf_counter() - start)
        return result

    for _ in range(rounds):
        item = timed("next", queue.next, me)
        timed("confirm", queue.submit, item, annotator=me, confirm=True) if item.label is not None else None
        item = timed("next", queue.next, me)
        timed("correct", queue.submit, item, (item.label or 30) + 3, me)
        item = timed("next", queue.next, me)
        item = timed("next (moves on)", queue.next, me, after=item.sample_id)
        timed("skip", queue.skip, item, me)
        timed("undo", queue.undo, me)
    return timings


def bench_backend(url: str, args: argparse.Namespace) -> dict[str, object]:
    cands, scores = synthetic(args.items)
    with FeedbackStore(url, startup_check=False) as store:
        seeded = seed(store, cands, args.votes)
        start = time.perf_counter()
        queue = ReviewQueue(store, cands, model_version="bench")
        queue.set_scores(scores)
        first = queue.next("opener")
        opened = time.perf_counter() - start
        queue.skip(first, "opener")
        timings = time_actions(queue, args.rounds)
        progress = queue.progress()
    return {"seed_s": seeded, "open_s": opened, "timings": timings, "progress": progress}


def bench_cold_start(args: argparse.Namespace) -> dict[str, float]:
    from age_model.predictor import AgePredictor
    from age_model.resources import default_model
    from age_model.review_scoring import DatasetReview, ScoreCache

    model = args.model or default_model()
    work = Path(tempfile.mkdtemp(prefix="agecheck-bench-start-"))
    out: dict[str, float] = {}
    try:
        with FeedbackStore(f"sqlite:///{work}/fb.db", startup_check=False) as store:
            start = time.perf_counter()
            predictor = AgePredictor(model)
            out["model_s"] = time.perf_counter() - start
            for run in ("cold", "restart"):
                ScoreCache._open.clear()  # as a new process: read the cache file again
                start = time.perf_counter()
                review = DatasetReview(
                    args.data, store, predictor, work / "review_scores", str(model), Path(str(model)).name
                ).start()
                review.wait(600)
                item = review.queue.next("ann") if review.queue is not None else None
                out[f"{run}_first_item_s"] = time.perf_counter() - start
                out[f"{run}_cached"] = review.cached
                out["items"] = review.total
                if item is None:
                    raise RuntimeError(f"no first item: {review.status()}")
                review.queue.skip(item, "ann")
                review.go()  # as the page's first request does
                if run == "cold":
                    deadline = time.monotonic() + args.score_seconds
                    while time.monotonic() < deadline and review.groups is None:
                        time.sleep(0.2)
                    out["groups_s"] = review.timings.get("groups_s", float("nan"))
                    out["groups"] = len(review.groups) if review.groups is not None else -1
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    samples = []
                    for _ in range(20):  # clicks while the scorer runs
                        t = time.perf_counter()
                        got = review.queue.next("ann")
                        review.queue.skip(got, "ann")
                        samples.append(time.perf_counter() - t)
                    out["next_while_scoring_p50_ms"], out["next_while_scoring_p95_ms"] = percentiles(samples)
                review.stop(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def bench_app(args: argparse.Namespace) -> dict[str, float]:
    """``python app.py --review DATA``: seconds to the first HTTP answer and to the first item a logged-in
    annotator gets through /annotate (gradio_client, as a browser's first Next), from a cold start with an
    empty store and score cache, then after a restart (Ctrl-C) with what the first run cached."""
    import httpx
    from gradio_client import Client

    work = Path(tempfile.mkdtemp(prefix="agecheck-bench-app-"))
    (work / "users.txt").write_text("ann:pw\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    out: dict[str, float] = {}
    try:
        for run in ("baseline", "cold", "restart"):  # baseline: the same app without --review
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            review = [] if run == "baseline" else ["--review", str(Path(args.data).resolve())]
            command = [
                sys.executable,
                str(REPO_ROOT / "app.py"),
                *review,
                "--port",
                str(port),
                "--store",
                f"sqlite:///{work}/{run == 'baseline'}.db",
                "--annotators",
                str(work / "users.txt"),
            ]
            if args.model:
                command += ["--model", args.model]
            start = time.perf_counter()
            process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                while True:
                    try:
                        httpx.get(f"{url}/healthz", timeout=2)
                        break
                    except httpx.HTTPError:
                        if process.poll() is not None or time.perf_counter() - start > 300:
                            raise RuntimeError("the app did not answer") from None
                        time.sleep(0.1)
                out[f"{run}_http_s"] = time.perf_counter() - start
                if run == "baseline":
                    continue
                client = Client(f"{url}/annotate/", auth=("ann", "pw"), verbose=False, analytics_enabled=False)
                while True:
                    try:
                        if client.predict("dataset", "", api_name="/next")[0]:
                            break
                    except Exception:  # "still loading": the page would show it and look again
                        pass
                    if time.perf_counter() - start > 300:
                        raise RuntimeError("no first item within 300 s")
                    time.sleep(0.2)
                out[f"{run}_first_item_s"] = time.perf_counter() - start
                if run == "cold":
                    time.sleep(args.score_seconds)  # let the scorer fill the cache a little
            finally:
                process.send_signal(2)  # SIGINT: the clean stop a restart follows
                process.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    args = parse_args()
    print(f"## Review queue: {args.items:,} items, {args.votes:,} votes, {args.rounds} rounds\n")
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average at start {load:.2f}, Python {sys.version.split()[0]}\n")
    if args.app_only:
        served = bench_app(args)
        print("| | first HTTP answer | first item at /annotate |\n|---|---:|---:|")
        print(f"| without `--review` (baseline) | {served['baseline_http_s']:.1f} | – |")
        print(
            f"| cold start (empty store and score cache) | {served['cold_http_s']:.1f} | "
            f"{served['cold_first_item_s']:.1f} |"
        )
        print(f"| restart | {served['restart_http_s']:.1f} | {served['restart_first_item_s']:.1f} |")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return
    results = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "sqlite":
            work = Path(tempfile.mkdtemp(prefix="agecheck-bench-sqlite-"))
            try:
                results[backend] = bench_backend(f"sqlite:///{work}/fb.db", args)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        elif backend == "postgresql":
            with Postgres() as url:
                results[backend] = bench_backend(url, args)
        else:
            raise SystemExit(f"unknown backend {backend!r}: sqlite or postgresql")
    names = list(results)
    print("| action | " + " | ".join(f"{n} p50 ms | {n} p95 ms" for n in names) + " |")
    print("|---|" + "---:|" * (2 * len(names)))
    for action in ACTIONS:
        cells = []
        for n in names:
            p50, p95 = percentiles(results[n]["timings"][action])
            cells += [f"{p50:.1f}", f"{p95:.1f}"]
        print(f"| {action} | " + " | ".join(cells) + " |")
    print(
        "| restart: open the queue and claim a first item (s) | "
        + " | ".join(f"{results[n]['open_s']:.2f} | –" for n in names)
        + " |"
    )
    for n in names:
        p = results[n]["progress"]
        print(
            f"\n{n}: seeded in {results[n]['seed_s']:.1f} s; queue after the run: {p.total:,} items, {p.done:,} "
            "settled, "
            f"statuses {p.by_status}"
        )
    if args.data:
        cold = bench_cold_start(args)
        print(f"\n## Start with `--review {args.data}` ({cold['items']:,} faces)\n")
        print("| | seconds |\n|---|---:|")
        print(f"| model load (once per process) | {cold['model_s']:.1f} |")
        print(f"| first item, empty score cache | {cold['cold_first_item_s']:.1f} |")
        print(f"| conflicting-duplicate groups ready ({cold['groups']:,} groups) | {cold['groups_s']:.1f} |")
        print(
            f"| first item after a restart ({cold['restart_cached']:,} scores cached) | "
            f"{cold['restart_first_item_s']:.1f} |"
        )
        print(
            f"\nNext while the scorer runs: p50 {cold['next_while_scoring_p50_ms']:.0f} ms, "
            f"p95 {cold['next_while_scoring_p95_ms']:.0f} ms"
        )
        served = bench_app(args)
        print(f"\n## `python app.py --review {args.data}`: seconds from launch\n")
        print("| | first HTTP answer | first item at /annotate |\n|---|---:|---:|")
        print(f"| without `--review` (baseline) | {served['baseline_http_s']:.1f} | – |")
        print(
            f"| cold start (empty store and score cache) | {served['cold_http_s']:.1f} | "
            f"{served['cold_first_item_s']:.1f} |"
        )
        print(f"| restart | {served['restart_http_s']:.1f} | {served['restart_first_item_s']:.1f} |")


if __name__ == "__main__":
    main()
