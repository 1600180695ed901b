"""The three tables of a store, in SQLAlchemy Core, identical on SQLite and PostgreSQL.

``votes`` is append-only: a vote is never updated or deleted; undo inserts a ``retract`` row whose
``retracts`` column (unique, so a vote is retracted at most once even under races) points at it.
``samples`` gains rows, and a NULL ``image_path`` may be filled once when the bytes arrive.
``claims`` is the only mutable table: short leases that keep two annotators off one item.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = "1"

metadata = MetaData()

samples = Table(
    "samples",
    metadata,
    Column("sample_id", String(64), primary_key=True),
    Column("source", String(200), nullable=False),
    Column("original_name", Text),
    Column("original_label", Float),
    Column("image_path", String(300)),  # relative to the images folder; NULL: only the id is known
    Column("first_seen", DateTime(timezone=True), nullable=False),
)

votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sample_id", String(64), ForeignKey("samples.sample_id"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),
    Column("age", Float),
    Column("annotator", String(200), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("source", String(200), nullable=False),
    Column("previous_label", Float),
    Column("model_age", Float),
    Column("model_version", String(200)),
    Column("note", Text),
    Column("consent", Boolean),
    Column("retracts", Integer, ForeignKey("votes.id"), unique=True),
    CheckConstraint("kind IN ('vote', 'retract')", name="vote_kind"),
    CheckConstraint(
        "(kind = 'vote' AND age IS NOT NULL AND retracts IS NULL) OR (kind = 'retract' AND retracts IS NOT NULL)",
        name="vote_shape",
    ),
)

claims = Table(
    "claims",
    metadata,
    Column("sample_id", String(64), primary_key=True),
    Column("annotator", String(200), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
