"""One store behind one URL: parse it into a database URL and the folder that holds the images.

Conventions:
- ``sqlite:///relative/feedback.db`` or ``sqlite:////abs/feedback.db``: images in ``images/``
  beside the database file.
- ``postgresql://user@host:port/db`` (or ``postgresql+psycopg://``, ``postgres://``): the psycopg 3
  driver; the images folder must be given, as ``?images_dir=/shared/path`` in the URL or the
  ``images_dir`` argument (a folder every annotator process can reach).
- ``images_dir`` in the URL query works for SQLite too and is removed before connecting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import StoreURLError

DEFAULT_URL = "sqlite:///feedback_data/feedback.db"  # relative to where the command starts
PERSISTENT_DIR = Path("/data")  # a Hugging Face Space's persistent storage, when the Space has it
ENV_URL = "AGECHECK_FEEDBACK_STORE"
EXAMPLES = "sqlite:///feedback_data/feedback.db or postgresql://user@host:5432/db?images_dir=/shared/images"


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: the SQLAlchemy URL to connect with and the images folder."""

    url: URL
    images_dir: Path
    backend: str  # "sqlite" or "postgresql"

    def display(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return self.url.render_as_string(hide_password=True)


def default_url(persistent_dir: Path = PERSISTENT_DIR) -> str:
    """The store when none is named: ``$AGECHECK_FEEDBACK_STORE``, else under /data where a Space keeps
    files across restarts, else DEFAULT_URL. The app, the feedback CLI and the store itself all ask here."""
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    if persistent_dir.is_dir() and os.access(persistent_dir, os.W_OK):
        return f"sqlite:///{persistent_dir / 'agecheck' / 'feedback.db'}"
    return DEFAULT_URL


def parse_store_url(url: str, images_dir: str | os.PathLike[str] | None = None) -> StoreLocation:
    """Validate a store URL; raise StoreURLError with an example of a good one otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(f"not a store URL: {url!r}; expected e.g. {EXAMPLES}")
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreURLError(f"malformed store URL {url!r}: {exc}; expected e.g. {EXAMPLES}") from None
    query_dir = parsed.query.get("images_dir")
    if isinstance(query_dir, tuple):
        query_dir = query_dir[-1]
    parsed = parsed.difference_update_query(["images_dir"])
    folder = images_dir if images_dir is not None else query_dir
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise StoreURLError(f"SQLite store needs a file path, e.g. {DEFAULT_URL}; got {url!r}")
        if folder is None:
            folder = Path(parsed.database).parent / "images"
    elif backend == "postgresql":
        if "+" not in parsed.drivername:  # name the installed driver, whatever SQLAlchemy's default
            parsed = parsed.set(drivername="postgresql+psycopg")
        if folder is None:
            raise StoreURLError(
                "a PostgreSQL store needs a shared images folder: add ?images_dir=/path to the URL or pass images_dir"
            )
    else:
        raise StoreURLError(f"unsupported store backend {backend!r} in {url!r}; use sqlite or postgresql")
    return StoreLocation(url=parsed, images_dir=Path(folder).expanduser(), backend=backend)
