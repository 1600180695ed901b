"""Test support for the feedback store: a throwaway PostgreSQL cluster, store URLs per backend,
small generated images, and worker functions for multi-process tests.

Kept importable without pytest side effects: spawned worker processes import this module.
"""

from __future__ import annotations

import atexit
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/14/bin")


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        path = Path(folder) / name
        if path.is_file():
            return str(path)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in a temp dir, run as the ``postgres`` user when we are root."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="agecheck-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError("running as root but there is no 'postgres' user to run initdb as") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.port = _free_port()
        self.started = False

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "agecheck", "-N", "-E", "UTF8")
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")
        self.started = True

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://agecheck@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database (isolation per test); returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=agecheck dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


_CLUSTER: PgCluster | None = None
_CLUSTER_ERROR: str | None = None


def pg_cluster() -> PgCluster | None:
    """The one cluster of this test process, started on first use; None (see pg_skip_reason) if impossible."""
    global _CLUSTER, _CLUSTER_ERROR
    if _CLUSTER is None and _CLUSTER_ERROR is None:
        try:
            cluster = PgCluster()
            atexit.register(cluster.stop)
            cluster.start()
            _CLUSTER = cluster
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _CLUSTER_ERROR = f"PostgreSQL not available: {exc}"
    return _CLUSTER


def pg_skip_reason() -> str | None:
    return _CLUSTER_ERROR


def stop_pg_cluster() -> None:
    global _CLUSTER
    if _CLUSTER is not None:
        _CLUSTER.stop()
        _CLUSTER = None


def make_image(seed: int, size: tuple[int, int] = (32, 32), fmt: str = "JPEG", exif_gps: bool = False) -> bytes:
    """A small distinct image; with ``exif_gps`` it carries a GPS EXIF block like a phone photo."""
    from PIL import Image

    im = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    im.putpixel((seed % size[0], (seed // size[0]) % size[1]), (255, 255, 255))
    out = io.BytesIO()
    kwargs = {}
    if exif_gps:
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 17.0)}  # GPSInfo
        exif[0x0112] = 6  # orientation: rotate 90
        kwargs["exif"] = exif
    im.save(out, fmt, **kwargs)
    return out.getvalue()


# -- worker functions for multiprocessing (module level so spawn can import them) ---------------


def vote_worker(url: str, images_dir: str, worker: int, sample_ids: list[str], n: int) -> list[int]:
    """Cast ``n`` votes as annotator ``w<worker>`` round-robin over the samples; return vote ids."""
    from age_model.feedback import FeedbackStore

    store = FeedbackStore(url, images_dir=images_dir, startup_check=False)
    ids = []
    for i in range(n):
        vote = store.add_vote(sample_ids[(worker + i) % len(sample_ids)], 20 + (i % 30), f"w{worker}")
        ids.append(vote.id)
    store.close()
    return ids


def upload_worker(url: str, images_dir: str, worker: int, n: int) -> list[str]:
    """Upload ``n`` images, half of them shared between workers (dedup under contention)."""
    from age_model.feedback import FeedbackStore

    store = FeedbackStore(url, images_dir=images_dir, startup_check=False)
    out = []
    for i in range(n):
        seed = i if i % 2 == 0 else 1000 + worker * 100 + i
        out.append(store.add_upload(make_image(seed), 30, f"u{worker}", consent=True, strip=False).sample_id)
    store.close()
    return out


def claim_worker(url: str, images_dir: str, worker: int, sample_ids: list[str]) -> list[str]:
    """Try to claim every sample; return the ones this worker won."""
    from age_model.feedback import FeedbackStore

    store = FeedbackStore(url, images_dir=images_dir, startup_check=False)
    won = [sid for sid in sample_ids if store.claim(sid, f"c{worker}", ttl=60)]
    store.close()
    return won


CRASH_SCRIPT = r"""
import os, sys, time
from age_model.feedback import FeedbackStore
from age_model.feedback import images as images_mod
url, images_dir, stage, flag = sys.argv[1:5]
store = FeedbackStore(url, images_dir=images_dir, startup_check=False)

def hang(*args, **kwargs):
    open(flag, "w").close()  # tell the test we are at the chosen point, then wait to be killed
    time.sleep(600)

if stage == "during_image_write":
    images_mod._publish = hang
elif stage == "before_commit":
    FeedbackStore._commit_upload = hang
elif stage == "inside_transaction":  # the sample row is inserted, the vote and the commit never come
    FeedbackStore._insert_vote = lambda self, conn, **values: hang()
data = open(sys.argv[5], "rb").read()
store.add_upload(data, 33, "crasher", consent=True, strip=False)
"""


def run_until_killed(
    url: str, images_dir: str, stage: str, image_file: Path, workdir: Path, timeout: float = 60
) -> int:
    """Start a writer that stops at ``stage``, SIGKILL it there; return its exit code."""
    import signal

    flag = workdir / f"flag-{stage}"
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            os.environ.get("PYTHON", __import__("sys").executable),
            "-c",
            CRASH_SCRIPT,
            url,
            images_dir,
            stage,
            str(flag),
            str(image_file),
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"writer exited early: {proc.communicate()[1].decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("writer never reached " + stage)
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.returncode


def next_worker(url: str, annotator: str) -> str | None:
    """One annotator process asking the submissions queue for its next item."""
    from age_model.feedback import FeedbackStore
    from age_model.review import ReviewQueue

    with FeedbackStore(url, startup_check=False) as store:
        item = ReviewQueue.for_submissions(store).next(annotator)
    return item.sample_id if item else None
