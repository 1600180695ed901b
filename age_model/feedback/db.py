"""Engines and transactions that behave the same on SQLite and PostgreSQL under concurrency.

SQLite: WAL journal, ``synchronous=FULL`` (a committed vote survives power loss), foreign keys
on, a 30 s busy timeout, and transactions opened by us: ``BEGIN IMMEDIATE`` for writes (take the
write lock up front, so a read-then-write transaction can never fail half way with "database is
locked"), plain ``BEGIN`` for reads. PostgreSQL: READ COMMITTED; races are settled by unique
keys and conditional updates. Both: transient lock/serialization errors are retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

T = TypeVar("T")
READ_OPTION = "agecheck_read_only"
TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def make_engine(url: URL) -> Engine:
    """An engine for the store URL; SQLite gets the pragmas and explicit BEGINs described above."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # autocommit at the driver: we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_OPTION) else "BEGIN IMMEDIATE")

    return engine


def _transient(exc: OperationalError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def run_tx(
    engine: Engine,
    fn: Callable[[Connection], T],
    *,
    read_only: bool = False,
    retry_integrity: bool = False,
    attempts: int = 6,
) -> T:
    """Run ``fn`` in one transaction, committed on return, rolled back on error, retried on
    transient lock errors (and once on IntegrityError when two writers raced to insert the same
    sample row, so the retry sees the winner's row)."""
    integrity_retried = False
    for attempt in range(attempts):
        try:
            with engine.connect() as conn:
                if read_only:
                    conn.execution_options(**{READ_OPTION: True})
                with conn.begin():
                    return fn(conn)
        except OperationalError as exc:
            if attempt + 1 >= attempts or not _transient(exc):
                raise
        except IntegrityError:
            if not retry_integrity or integrity_retried:
                raise
            integrity_retried = True
        time.sleep(random.uniform(0.01, 0.05) * (2**attempt))
    raise AssertionError("unreachable")
