"""Pytest fixtures for the feedback tests: every store test runs on SQLite and on PostgreSQL.

Registered for every test module by ``pytest_plugins`` in conftest.py.
The PostgreSQL cluster is started once per test process (the first time a postgresql test needs
it) and stopped at the end of the session; each test gets a fresh database in it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from collections.abc import Iterator
from pathlib import Path

import pytest

from age_model.feedback import FeedbackStore
from tests.feedback_support import PgCluster, pg_cluster, pg_skip_reason, stop_pg_cluster

__all__ = ["pg", "spawn_pool", "store_url", "store"]
POOL_SIZE = 4


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = pg_cluster()
    if cluster is None:
        pytest.skip(pg_skip_reason() or "PostgreSQL not available")
    yield cluster
    stop_pg_cluster()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL on each backend (PostgreSQL: images folder in the URL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/feedback.db"
    cluster = request.getfixturevalue("pg")
    return f"{cluster.new_database()}?images_dir={tmp_path}/images"


@pytest.fixture
def store(store_url: str) -> Iterator[FeedbackStore]:
    with FeedbackStore(store_url) as opened:
        yield opened


_POOL: multiprocessing.pool.Pool | None = None


@pytest.fixture(scope="session")
def spawn_pool() -> Iterator[multiprocessing.pool.Pool]:
    """Spawned worker processes (fresh interpreters, like separate app processes), started once
    per test process even though several modules import this fixture: the workers are stateless,
    each task opens the store from its URL."""
    global _POOL
    if _POOL is None:
        _POOL = multiprocessing.get_context("spawn").Pool(POOL_SIZE)
    yield _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL.join()
        _POOL = None
