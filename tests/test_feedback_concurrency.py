"""Many writers at once and writers killed mid-save, on SQLite and on PostgreSQL.

Worker processes are *spawned* (fresh interpreters, like separate app processes) and open the
store from its URL on their own.
"""

from __future__ import annotations

import hashlib
import multiprocessing.pool
import signal
from collections import Counter
from pathlib import Path

import pytest

from age_model.feedback import FeedbackStore, Status
from tests.feedback_fixtures import POOL_SIZE as WORKERS
from tests.feedback_support import claim_worker, make_image, run_until_killed, upload_worker, vote_worker

Pool = multiprocessing.pool.Pool


def test_parallel_votes_lose_nothing(store_url: str, spawn_pool: Pool) -> None:
    with FeedbackStore(store_url) as store:
        ids = [
            store.register_sample(hashlib.sha256(bytes([i])).hexdigest(), source="utkface", original_label=30)
            for i in range(5)
        ]
        results = spawn_pool.starmap(
            vote_worker, [(store_url, str(store.images.root), w, ids, 25) for w in range(WORKERS)]
        )
        vote_ids = [v for r in results for v in r]
        assert len(vote_ids) == len(set(vote_ids)) == WORKERS * 25
        rows = store.votes()
        assert sorted(v.id for v in rows) == sorted(vote_ids)
        assert Counter(v.annotator for v in rows) == {f"w{w}": 25 for w in range(WORKERS)}
        assert all(v.age is not None and v.kind == "vote" for v in rows)
        assert all(store.label(s).num_votes == WORKERS for s in ids)  # one voice per annotator per sample
        assert store.fsck(verify=True).ok


def test_threads_sharing_one_store_lose_nothing(store: FeedbackStore) -> None:
    """Gradio runs handlers in threads over one store object."""
    from concurrent.futures import ThreadPoolExecutor

    sample = store.register_sample(hashlib.sha256(b"t").hexdigest(), source="utkface", original_label=30)

    def vote(n: int) -> int:
        return store.add_vote(sample, 20 + n % 10, f"t{n % 8}").id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(vote, range(80)))
    assert len(set(ids)) == 80 and len(store.votes(sample)) == 80 and store.label(sample).num_votes == 8


def test_parallel_uploads_deduplicate_images(store_url: str, spawn_pool: Pool) -> None:
    with FeedbackStore(store_url) as store:
        results = spawn_pool.starmap(upload_worker, [(store_url, str(store.images.root), w, 6) for w in range(WORKERS)])
        shared = {results[0][i] for i in (0, 2, 4)}
        assert all({r[i] for i in (0, 2, 4)} == shared for r in results)  # same bytes, same id everywhere
        expected = 3 + WORKERS * 3
        assert len(store.samples()) == expected and len(list(store.images.files())) == expected
        assert len(store.votes()) == WORKERS * 6
        assert all(store.label(s).num_votes == WORKERS for s in shared)
        report = store.fsck(verify=True)
        assert report.ok, report.summary()


def test_parallel_claims_are_exclusive(store_url: str, spawn_pool: Pool) -> None:
    ids = [hashlib.sha256(f"c{i}".encode()).hexdigest() for i in range(20)]
    with FeedbackStore(store_url) as store:
        won = spawn_pool.starmap(claim_worker, [(store_url, str(store.images.root), w, ids) for w in range(WORKERS)])
        flat = [s for w in won for s in w]
        assert sorted(flat) == sorted(ids)  # every sample claimed exactly once
        holders = store.active_claims()
        assert all(holders[s][0] == f"c{w}" for w, mine in enumerate(won) for s in mine)


@pytest.mark.parametrize("stage", ["during_image_write", "before_commit", "inside_transaction"])
def test_writer_killed_mid_save_leaves_store_consistent(store_url: str, stage: str, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(make_image(77))
    with FeedbackStore(store_url) as store:
        keep = store.add_upload(make_image(78), 40, "before", consent=True)
        code = run_until_killed(store_url, str(store.images.root), stage, image, tmp_path)
        assert code == -signal.SIGKILL
        # no half record: the killed upload left no sample row and no vote
        assert [v.id for v in store.votes()] == [keep.id] and len(store.samples()) == 1
        report = store.fsck()
        if stage == "during_image_write":
            assert len(report.temp_files) == 1 and not report.orphan_files
        else:  # the file was published, the rows never committed
            assert [p.name for p in report.orphan_files] == [f"{hashlib.sha256(image.read_bytes()).hexdigest()}.jpg"]
        assert not report.missing_images and not report.bad_votes
        assert store.fsck(clean=True, grace=0).ok
        # the same upload now goes through and the store is whole
        redo = store.add_upload(image.read_bytes(), 33, "crasher", consent=True, strip=False)
        assert store.label(redo.sample_id).status == Status.SETTLED and store.fsck(verify=True).ok
