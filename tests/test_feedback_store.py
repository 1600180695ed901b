"""Feedback store: votes, aggregation, undo, statuses, bad input, images, claims, fsck.

Each test taking ``store`` runs against SQLite and a real PostgreSQL server.
"""

from __future__ import annotations

import hashlib
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from age_model.feedback import (
    FeedbackError,
    FeedbackStore,
    InvalidAgeError,
    InvalidAnnotatorError,
    InvalidFieldError,
    InvalidImageError,
    LabelRules,
    NothingToUndoError,
    Status,
    StoreConnectionError,
    StoreURLError,
    UnknownSampleError,
    Vote,
    aggregate,
    parse_store_url,
    sample_id_of,
    strip_metadata,
)
from tests.feedback_support import make_image


def sid(n: int) -> str:
    return hashlib.sha256(f"sample-{n}".encode()).hexdigest()


def votes_of(*ages: float, reference: float | None = None) -> list[Vote]:
    now = datetime.now(UTC)
    return [
        Vote(
            id=i + 1,
            sample_id="s",
            kind="vote",
            age=a,
            annotator=f"a{i}",
            created_at=now,
            source="d",
            previous_label=reference,
        )
        for i, a in enumerate(ages)
    ]


# -- the rules, without a database ----------------------------------------------------------------


def test_aggregate_mean_std_and_statuses() -> None:
    label = aggregate("s", votes_of(32, 34, 36), original_label=30)
    assert label.status == Status.SETTLED and label.age == 34 and math.isclose(label.age_std, math.sqrt(8 / 3))
    assert aggregate("s", [], original_label=30).status == Status.UNREVIEWED
    assert aggregate("s", votes_of(10, 40), original_label=30).status == Status.NEEDS_ANOTHER_LOOK
    # crossing 18 (16 -> 19) needs a second annotator agreeing within 5 years
    assert aggregate("s", votes_of(19), original_label=16).status == Status.PENDING_SECOND_OPINION
    assert aggregate("s", votes_of(19, 21), original_label=16).status == Status.SETTLED
    assert aggregate("s", votes_of(19, 27), original_label=16).status == Status.PENDING_SECOND_OPINION  # 8 y apart
    assert aggregate("s", votes_of(22), original_label=30).crossed == (25.0,)
    assert aggregate("s", votes_of(20), original_label=30).crossed == (25.0,)
    assert aggregate("s", votes_of(26), original_label=30).status == Status.SETTLED  # same side of 18 and 25
    # without an original label the first vote's previous_label is the reference
    assert aggregate("s", votes_of(17, reference=19)).status == Status.PENDING_SECOND_OPINION
    assert (
        aggregate("s", votes_of(19), original_label=16, rules=LabelRules(require_second_opinion=False)).status
        == Status.SETTLED
    )
    assert aggregate("s", votes_of(10, 40), rules=LabelRules(disagreement_std=20)).status == Status.SETTLED


def test_aggregate_counts_each_annotator_once_and_ignores_retracted() -> None:
    now = datetime.now(UTC)
    rows = [
        Vote(1, "s", "vote", 20.0, "ann", now, "d"),
        Vote(2, "s", "vote", 30.0, "ann", now, "d"),  # revote: latest counts
        Vote(3, "s", "vote", 50.0, "bob", now, "d"),
        Vote(4, "s", "retract", None, "bob", now, "d", retracts=3),
    ]
    label = aggregate("s", rows)
    assert label.age == 30.0 and label.num_votes == 1 and label.annotators == ("ann",)


# -- URLs ----------------------------------------------------------------------------------------


def test_krippendorff_alpha_matches_the_formula_and_ignores_strangers() -> None:
    from itertools import permutations

    from age_model.feedback.aggregate import krippendorff_alpha

    units = {
        "u1": [10.0, 12.0],
        "u2": [20.0, 18.0, 25.0],
        "u3": [30.0, 33.0],
        "u4": [41.0],
    }  # u4: one voice, unpairable
    by_sample = {u: votes_of(*ages) for u, ages in units.items()}
    pairable = [ages for ages in units.values() if len(ages) > 1]
    values = [a for ages in pairable for a in ages]
    within = sum(sum((a - b) ** 2 for a, b in permutations(ages, 2)) / (len(ages) - 1) for ages in pairable)
    between = sum((a - b) ** 2 for a, b in permutations(values, 2))
    expected = 1 - (len(values) - 1) * within / between  # Krippendorff (2011), interval metric
    assert math.isclose(krippendorff_alpha(by_sample), expected, rel_tol=1e-9) and 0.8 < expected < 1
    now = datetime.now(UTC)
    stranger = Vote(
        id=9, sample_id="s", kind="vote", age=80.0, annotator="public:0123456789ab", created_at=now, source="d"
    )
    assert math.isclose(krippendorff_alpha({**by_sample, "u1": by_sample["u1"] + [stranger]}), expected)
    assert krippendorff_alpha({"u4": votes_of(41.0)}) is None  # nobody to agree with
    assert krippendorff_alpha({"u": votes_of(30.0, 30.0)}) == 1.0


def test_store_url_conventions(tmp_path: Path) -> None:
    loc = parse_store_url(f"sqlite:///{tmp_path}/fb/feedback.db")
    assert loc.backend == "sqlite" and loc.images_dir == tmp_path / "fb" / "images"
    loc = parse_store_url(f"sqlite:///{tmp_path}/f.db?images_dir={tmp_path}/imgs")
    assert loc.images_dir == tmp_path / "imgs" and "images_dir" not in str(loc.url)
    loc = parse_store_url("postgresql://u:secret@h:5/db?images_dir=/shared/i")
    assert loc.url.drivername == "postgresql+psycopg" and loc.images_dir == Path("/shared/i")
    assert "secret" not in loc.display()
    assert parse_store_url("postgres://u@h/db", images_dir="/x").url.drivername == "postgresql+psycopg"
    for bad, words in [
        ("feedback.db", "not a store URL"),
        ("mysql://u@h/db", "unsupported"),
        ("sqlite://", "file path"),
        ("sqlite:///:memory:", "file path"),
        ("postgresql://u@h/db", "images folder"),
        ("::::", "not a store URL"),
    ]:
        with pytest.raises(StoreURLError, match=words):
            parse_store_url(bad)
    with pytest.raises(StoreConnectionError, match="no feedback store"):
        FeedbackStore(f"sqlite:///{tmp_path}/missing/feedback.db", create=False)
    assert not (tmp_path / "missing").exists()


def test_strip_metadata_drops_gps_and_applies_orientation() -> None:
    raw = make_image(3, size=(40, 20), exif_gps=True)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.getexif().get(0x8825) is not None
    clean = strip_metadata(raw)
    with Image.open(io.BytesIO(clean)) as im:
        assert im.format == "JPEG" and im.size == (20, 40)  # rotated upright, then EXIF dropped
        assert not im.getexif() and "exif" not in im.info and "icc_profile" not in im.info
    assert strip_metadata(raw) == clean  # deterministic: same photo, same id
    import numpy as np

    assert strip_metadata(np.zeros((8, 6, 3), dtype=np.uint8))[:2] == b"\xff\xd8"


# -- the store, on both backends -----------------------------------------------------------------


def test_upload_stored_once_and_votes_append(store: FeedbackStore) -> None:
    raw = make_image(1, exif_gps=True)
    vote = store.add_upload(raw, 19, " alice ", consent=True, model_age=16.5, model_version="v1", note="ID shown")
    assert (
        vote.annotator == "alice" and vote.source == "upload" and vote.previous_label == 16.5
    )  # the estimate it corrects
    path = store.image_file(vote.sample_id)
    assert path is not None and sample_id_of(path.read_bytes()) == vote.sample_id
    with Image.open(path) as im:
        assert not im.getexif()
    again = store.add_upload(raw, 21, "bob", consent=None)
    assert again.sample_id == vote.sample_id and again.previous_label == 19.0
    assert len(list(store.images.files())) == 1 and len(store.samples()) == 1
    label = store.label(vote.sample_id)
    assert (label.status, label.age, label.age_std, label.num_votes, label.consent) == (
        Status.SETTLED,
        20.0,
        1.0,
        2,
        True,
    )
    assert label.model_age == 16.5 and label.model_version == "v1"
    kept = store.add_image(raw, source="upload", strip=False)  # bytes as given: another sample
    assert kept == sample_id_of(raw) and kept != vote.sample_id


def test_dataset_sample_votes_aggregate_and_undo(store: FeedbackStore) -> None:
    s = store.register_sample(sid(1), source="utkface", original_name="24_0_2.jpg", original_label=30)
    assert store.label(s).status == Status.UNREVIEWED and store.image_file(s) is None
    first = store.add_vote(s, 32, "a")
    assert first.previous_label == 30.0 and first.source == "utkface"
    store.add_vote(s, 34, "b")
    store.add_vote(s, 36, "c")
    label = store.label(s)
    assert label.age == 34 and math.isclose(label.age_std, math.sqrt(8 / 3)) and label.status == Status.SETTLED
    retraction = store.undo("c")
    assert retraction.kind == "retract" and retraction.age is None
    assert store.label(s).age == 33 and len(store.votes(s)) == 4  # nothing deleted
    c_vote = store.votes(s, annotator="c")[0]
    assert retraction.retracts == c_vote.id and c_vote.age == 36.0
    with pytest.raises(NothingToUndoError):
        store.undo("c")
    store.add_vote(s, 40, "a")  # a changes their mind: latest vote counts
    assert store.label(s).age == 37
    store.undo("a")
    assert store.label(s).age == 33  # a's earlier vote counts again
    store.undo("a", s)
    store.undo("b")
    assert store.label(s).status == Status.UNREVIEWED
    assert store.register_samples([{"sample_id": s, "source": "utkface"}]) == 0  # already known


def test_second_opinion_and_disagreement_in_store(store: FeedbackStore) -> None:
    minor = store.register_sample(sid(2), source="appa-real", original_label=16)
    store.add_vote(minor, 19, "a")
    label = store.label(minor)
    assert label.status == Status.PENDING_SECOND_OPINION and label.crossed == (18.0,)
    store.add_vote(minor, 21, "b")
    assert store.label(minor).status == Status.SETTLED
    split = store.register_sample(sid(3), source="appa-real", original_label=30)
    store.add_vote(split, 10, "a")
    store.add_vote(split, 45, "b")
    assert store.label(split).status == Status.NEEDS_ANOTHER_LOOK


def test_bad_input_raises_and_stores_nothing(store: FeedbackStore, tmp_path: Path) -> None:
    good = make_image(5)
    known = store.register_sample(sid(4), source="utkface", original_label=20)
    cases = [
        (InvalidAgeError, lambda: store.add_vote(known, "abc", "a")),
        (InvalidAgeError, lambda: store.add_vote(known, -1, "a")),
        (InvalidAgeError, lambda: store.add_vote(known, 120.5, "a")),
        (InvalidAgeError, lambda: store.add_vote(known, float("nan"), "a")),
        (InvalidAgeError, lambda: store.add_vote(known, True, "a")),
        (InvalidAgeError, lambda: store.add_vote(known, None, "a")),
        (InvalidAnnotatorError, lambda: store.add_vote(known, 30, "")),
        (InvalidAnnotatorError, lambda: store.add_vote(known, 30, "   ")),
        (InvalidAnnotatorError, lambda: store.add_vote(known, 30, None)),
        (UnknownSampleError, lambda: store.add_vote(sid(99), 30, "a")),
        (InvalidFieldError, lambda: store.add_vote("not-a-hash", 30, "a")),
        (InvalidFieldError, lambda: store.add_vote(known, 30, "a", consent="yes")),
        (InvalidImageError, lambda: store.add_upload(b"GIF89a but not really", 30, "a", consent=True)),
        (InvalidImageError, lambda: store.add_upload(b"", 30, "a", consent=True)),
        (InvalidImageError, lambda: store.add_upload(good[: len(good) // 2], 30, "a", consent=True, strip=False)),
        (InvalidImageError, lambda: store.add_image(tmp_path / "nope.jpg", source="upload")),
        (InvalidAgeError, lambda: store.add_upload(good, 200, "a", consent=True)),
        (InvalidAnnotatorError, lambda: store.add_upload(good, 30, "", consent=True)),
        (
            InvalidAgeError,
            lambda: store.add_votes(
                [{"sample_id": known, "age": 30, "annotator": "a"}, {"sample_id": known, "age": "x", "annotator": "b"}]
            ),
        ),
        (
            UnknownSampleError,
            lambda: store.add_votes(
                [{"sample_id": known, "age": 30, "annotator": "a"}, {"sample_id": sid(98), "age": 30, "annotator": "b"}]
            ),
        ),
        (UnknownSampleError, lambda: store.label(sid(97))),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, FeedbackError) and isinstance(info.value, ValueError) and str(info.value)
    assert store.votes() == [] and [s.sample_id for s in store.samples()] == [known]
    assert list(store.images.files()) == [] and store.images.temp_files() == []


def test_add_votes_imports_in_one_transaction(store: FeedbackStore) -> None:
    s = store.register_sample(sid(6), source="fgnet", original_label=40)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    votes = store.add_votes(
        [
            {"sample_id": s, "age": 41, "annotator": "a", "created_at": when},
            {"sample_id": s, "age": 43, "annotator": "b", "note": "beard"},
        ]
    )
    assert [v.age for v in store.votes(s)] == [41.0, 43.0] and votes[1].previous_label == 41.0
    assert store.votes(s)[0].created_at == when


def test_claims_are_exclusive_and_expire(store: FeedbackStore) -> None:
    a, b = sid(7), sid(8)
    assert store.claim(a, "ann", ttl=60)
    assert not store.claim(a, "bob", ttl=60)
    assert store.claim(a, "ann", ttl=60)  # renewing one's own claim
    assert set(store.active_claims()) == {a}
    store.release(a, "bob")  # not bob's: no effect
    assert not store.claim(a, "bob")
    store.release(a, "ann")
    assert store.claim(a, "bob", ttl=60)
    assert store.claim(b, "ann", ttl=0)  # expires at once
    assert store.claim(b, "bob", ttl=60) and store.active_claims()[b][0] == "bob"


def test_voting_releases_the_voters_claim(store: FeedbackStore) -> None:
    s = store.register_sample(sid(9), source="utkface", original_label=50)
    assert store.claim(s, "ann")
    store.add_vote(s, 52, "ann")
    assert store.active_claims() == {}


def test_fsck_finds_and_cleans_orphans_and_damage(store: FeedbackStore) -> None:
    vote = store.add_upload(make_image(10), 30, "a", consent=True)
    assert store.fsck().ok
    orphan_id = sample_id_of(make_image(11))
    orphan = store.images.resolve(store.images.save(make_image(11), orphan_id, ".jpg"))  # file without a row
    (store.images.root / ".tmp").mkdir(exist_ok=True)
    temp = store.images.root / ".tmp" / "dead.part"
    temp.write_bytes(b"half")
    report = store.fsck(clean=True)  # both are fresh: inside the grace period, kept
    assert report.orphan_files == [orphan] and report.temp_files == [temp] and not report.removed and not report.ok
    report = store.fsck(clean=True, grace=0)
    assert set(report.removed) == {orphan, temp} and report.ok and not orphan.exists()
    path = store.image_file(vote.sample_id)
    path.write_bytes(make_image(12))
    assert store.fsck(verify=True).corrupt_images == [vote.sample_id]
    path.unlink()
    assert store.fsck().missing_images == [vote.sample_id]


def test_reopen_keeps_everything(store_url: str) -> None:
    with FeedbackStore(store_url) as first:
        vote = first.add_upload(make_image(13), 44, "a", consent=False)
    with FeedbackStore(store_url, create=False) as again:
        assert again.votes()[0] == vote and again.label(vote.sample_id).consent is False
