"""Review queue: order by |model - label| / spread, claims, skipping settled items, progress, agreement."""

from __future__ import annotations

import hashlib
import math
import multiprocessing.pool
from dataclasses import replace
from types import SimpleNamespace

import datasets
import pytest

from age_model.feedback import FeedbackStore, Status
from age_model.review import ReviewQueue
from tests.feedback_support import make_image, next_worker

LABELS = [20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
MODEL = [22.0, 45.0, 40.0, 20.0, 61.0, 70.0]
SPREAD = [2.0, 5.0, 1.0, 6.0, 1.0, None]  # scores 1, 3, 0, 5, 1, 0 (None: default spread 5)
ORDER = [3, 1, 0, 4, 2, 5]


def small_dataset(with_id: bool = True) -> datasets.Dataset:
    images = [make_image(100 + i) for i in range(len(LABELS))]
    columns = {
        "image": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)],
        "age": LABELS,
        "file": [f"{i}.jpg" for i in range(len(LABELS))],
    }
    features = {"image": datasets.Image(), "age": datasets.Value("float32"), "file": datasets.Value("string")}
    if with_id:
        columns["id"] = [hashlib.sha256(b).hexdigest() for b in images]
        features["id"] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_dataset_queue_order_claims_and_progress(store: FeedbackStore) -> None:
    ds = small_dataset()
    queue = ReviewQueue.for_dataset(store, ds, predictions=(MODEL, SPREAD), source="utkface", model_version="m1")
    assert [i.index for i in queue.items()] == ORDER
    assert [i.score for i in queue.items()][:2] == [5.0, 3.0]
    ann = queue.next("ann")
    assert ann.index == 3 and ann.claimed_until is not None and ann.sample_id == ds[3]["id"]
    bob = queue.next("bob")
    assert bob.index == 1  # 3 is ann's for now
    assert queue.next("ann").index == 3  # a reload gives ann the same item back
    assert queue.image(ann).size == (32, 32)

    vote = queue.submit(ann, 50, "ann")  # confirms the label: settled, leaves the queue
    assert vote.model_age == 20.0 and vote.model_version == "m1" and vote.previous_label == 50.0
    assert store.sample(ann.sample_id).original_name == "3.jpg" and store.label(ann.sample_id).status == Status.SETTLED
    assert 3 not in [i.index for i in queue.items()]
    assert queue.next("ann").index == 0  # 1 is still bob's

    queue.submit(bob, 22, "bob")  # 30 -> 22 crosses 25: waits for a second opinion
    assert store.label(bob.sample_id).status == Status.PENDING_SECOND_OPINION
    assert queue.items("carol")[0].index == 1  # contested items first
    assert 1 not in [i.index for i in queue.items("bob")]  # bob cannot second himself
    queue.skip(queue.next("ann"), "ann")
    carol = queue.next("carol")
    assert carol.index == 1 and carol.status == Status.PENDING_SECOND_OPINION and carol.label == 22.0
    queue.submit(carol, 24, "carol")
    assert store.label(bob.sample_id).status == Status.SETTLED

    progress = queue.progress()
    assert (progress.total, progress.done, progress.left) == (6, 2, 4)
    assert progress.per_annotator == {"ann": 1, "bob": 1, "carol": 1}
    assert progress.by_status == {"settled": 2, "unreviewed": 4}
    agree = queue.agreement()
    assert agree["pairs"] == 1 and agree["mean_abs_diff"] == 2.0 and agree["within_5"] == 1.0
    assert agree["per_annotator"]["bob"]["within_5"] == 1.0 and agree["per_annotator"]["ann"]["pairs"] == 0
    with pytest.raises(ValueError, match="not in this review queue"):
        queue.submit("0" * 64, 30, "ann")


def test_predictions_callable_or_arrays_give_the_same_queue(tmp_path) -> None:
    calls = []

    def predict(images):
        calls.append(len(images))
        ages = [sum(im.convert("RGB").getpixel((0, 0))) / 10 for im in images]
        return ages, [3.0] * len(images)

    with FeedbackStore(f"sqlite:///{tmp_path}/s/feedback.db") as store:
        ds = small_dataset(with_id=False)
        by_call = ReviewQueue.for_dataset(store, ds, predictions=predict, source="utkface", batch_size=4)
        assert calls == [4, 2]
        ages, spreads = predict(list(ds["image"]))
        by_array = ReviewQueue.for_dataset(
            store, small_dataset(), predictions={"age": ages, "spread": spreads}, source="utkface"
        )
        estimates = [SimpleNamespace(age=a, spread=s) for a, s in zip(ages, spreads)]
        by_objects = ReviewQueue.for_dataset(store, small_dataset(), predictions=estimates, source="utkface")
        orders = [[(i.sample_id, i.model_age) for i in q.items()] for q in (by_call, by_array, by_objects)]
        assert orders[0] == orders[1] == orders[2]
        none = ReviewQueue.for_dataset(store, ds, source="utkface")
        assert [i.index for i in none.items()] == list(range(len(LABELS))) and none.items()[0].score is None
        with pytest.raises(ValueError, match="predictions"):
            ReviewQueue.for_dataset(store, ds, predictions=[1.0, 2.0, 3.0], source="utkface")
        with pytest.raises(ValueError, match="source"):
            ReviewQueue.for_dataset(store, ds)


def test_submissions_queue_uses_recorded_estimates(store: FeedbackStore) -> None:
    far = store.add_upload(make_image(200), 12, "shop1", consent=True, model_age=30)  # crosses 18 and 25
    near = store.add_upload(make_image(201), 19, "shop2", consent=False, model_age=16)  # crosses 18
    fine = store.add_upload(make_image(202), 41, "shop1", consent=True, model_age=40)  # settled by one vote
    assert store.label(fine.sample_id).status == Status.SETTLED and near.previous_label == 16.0
    queue = ReviewQueue.for_submissions(store)
    items = queue.items("reviewer")
    assert [i.sample_id for i in items] == [far.sample_id, near.sample_id]
    assert math.isclose(items[0].score, 18 / 5) and items[0].status == Status.PENDING_SECOND_OPINION
    assert queue.image(items[0]).format == "JPEG"
    assert [i.sample_id for i in queue.items("shop1")] == [near.sample_id]
    late = store.add_upload(make_image(203), 30, "shop3", consent=True, model_age=15)
    assert late.sample_id in [i.sample_id for i in queue.items()]  # re-read on every call
    given = ReviewQueue.for_submissions(store, predictions={near.sample_id: (60.0, 2.0)})
    assert given.items()[0].sample_id == near.sample_id and given.items()[0].score == (60 - 19) / 2


def test_annotators_in_separate_processes_never_share_an_item(
    store_url: str,
    spawn_pool: multiprocessing.pool.Pool,
) -> None:
    with FeedbackStore(store_url) as store:
        for i in range(4):
            store.add_upload(make_image(300 + i), 30, "shop", consent=True, model_age=10)  # all pending
        got = spawn_pool.starmap(next_worker, [(store_url, f"r{w}") for w in range(4)])
        assert None not in got and len(set(got)) == 4
        assert next_worker(store_url, "r9") is None  # everything is claimed


def test_the_queue_enforces_the_rules_not_the_caller(store: FeedbackStore) -> None:
    from age_model.review import AlreadyVotedError, HeldByOtherError, NothingToConfirmError, ReviewError

    ds = small_dataset()
    queue = ReviewQueue.for_dataset(store, ds, predictions=(MODEL, SPREAD), source="utkface")
    ann = queue.next("ann")
    with pytest.raises(HeldByOtherError, match="ann is reviewing this item"):
        queue.submit(ann, 30, "bob")
    with pytest.raises(ReviewError, match="Type the age"):
        queue.submit(ann, None, "ann")
    queue.submit(ann, None, "ann", confirm=True)  # confirm records the label shown
    assert store.votes(ann.sample_id)[-1].age == LABELS[ann.index]
    with pytest.raises(AlreadyVotedError):
        queue.submit(ann, 31, "ann")
    moved = queue.next("ann")
    assert queue.next("ann", after=moved.sample_id).sample_id != moved.sample_id  # Next moves on
    assert moved.sample_id not in store.active_claims()
    unlabelled = ReviewQueue(store, [replace(queue.candidate(moved.sample_id), original_label=None)])
    with pytest.raises(NothingToConfirmError):
        unlabelled.submit(unlabelled.next("carol"), annotator="carol", confirm=True)
    assert store.votes(moved.sample_id) == []  # nothing was written by any refusal


def test_votes_from_another_process_reach_the_queue_per_click(store: FeedbackStore) -> None:
    ds = small_dataset()
    mine = ReviewQueue.for_dataset(store, ds, predictions=(MODEL, SPREAD), source="utkface")
    other = ReviewQueue.for_dataset(store, ds, predictions=(MODEL, SPREAD), source="utkface")  # another server
    item = other.next("bob")
    other.submit(item, None, "bob", confirm=True)
    assert item.sample_id not in [i.sample_id for i in mine.items()]  # settled elsewhere: gone here too
    assert mine.progress().done == 1 and mine.progress().per_annotator == {"bob": 1}
    retraction, back = other.undo("bob")
    assert back.sample_id == item.sample_id and retraction.retracts is not None
    assert mine.progress().done == 0


def test_bulk_batch_confirms_in_one_go_and_refuses_all_or_nothing(store: FeedbackStore) -> None:
    from age_model.review import AlreadyVotedError

    queue = ReviewQueue.for_dataset(store, small_dataset(), predictions=(MODEL, SPREAD), source="utkface")
    grid = queue.batch("ann", 4)
    assert [i.index for i in grid] == ORDER[:4] and len({i.sample_id for i in grid}) == 4
    assert queue.batch("bob", 12) and not {i.sample_id for i in queue.batch("bob", 12)} & {i.sample_id for i in grid}
    votes = queue.submit_batch("ann", [(grid[0].sample_id, None), (grid[1].sample_id, None), (grid[2].sample_id, 33)])
    assert [v.age for v in votes] == [LABELS[grid[0].index], LABELS[grid[1].index], 33.0]
    with pytest.raises(AlreadyVotedError):
        queue.submit_batch("ann", [(grid[3].sample_id, None), (grid[0].sample_id, None)])
    assert store.votes(grid[3].sample_id) == []  # the good half of a refused batch is not written either


def conflict_dataset(tmp_path) -> datasets.Dataset:
    """Three rows: two near-duplicates of one face labelled 19 and 35 (one re-encoded), and another face."""
    import io

    from PIL import Image

    def encoded(image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    face = Image.linear_gradient("L").resize((64, 64)).convert("RGB")  # dark to light, top to bottom
    other = face.rotate(90)  # light to dark, left to right: another difference hash
    images = [encoded(face, 95), encoded(face, 60), encoded(other, 95)]
    return datasets.Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)],
            "age": [19.0, 35.0, 50.0],
            "id": [hashlib.sha256(b).hexdigest() for b in images],
            "file": [f"{i}.jpg" for i in range(3)],
            "source": ["utkface"] * 3,
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "age": datasets.Value("float32"),
                "id": datasets.Value("string"),
                "file": datasets.Value("string"),
                "source": datasets.Value("string"),
            }
        ),
    )


def test_one_decision_settles_a_conflicting_group_and_training_uses_it(store: FeedbackStore, tmp_path) -> None:
    from age_model.data import conflicting_groups
    from age_model.feedback.export import feedback_dataset
    from age_model.feedback.merge import apply_feedback

    ds = conflict_dataset(tmp_path)
    groups = conflicting_groups(ds, cache=False)
    assert len(groups) == 1 and sorted(groups[0]["ages"]) == [19.0, 35.0]
    queue = ReviewQueue.for_groups(store, groups, dataset=ds)
    item = queue.next("ann")
    assert item.members == tuple(groups[0]["ids"]) and queue.image(item, member=1).size == (64, 64)
    queue.submit(item, 30, "ann")  # the copy labelled 19 crosses 25 at 30: a second annotator must agree
    assert [store.label(i).status for i in item.members] == [Status.PENDING_SECOND_OPINION, Status.SETTLED]
    assert queue.items("bob")[0].status == Status.PENDING_SECOND_OPINION  # the group stays open until every copy is
    retraction, back = queue.undo("ann")  # undo takes the whole decision back
    assert back.sample_id == item.sample_id and all(store.label(i).num_votes == 0 for i in item.members)
    queue.submit(back, 30, "ann")
    queue.submit(queue.next("bob"), 31, "bob")
    assert {store.label(i).status for i in item.members} == {Status.SETTLED} and queue.progress().done == 1
    fixed, summary = apply_feedback(datasets.DatasetDict({"train": ds}), feedback_dataset(store))
    assert fixed["train"]["age"][:2] == [30.5, 30.5] and fixed["train"]["age"][2] == 50.0
    assert summary["corrected"] == 2


def test_public_reports_wait_for_an_annotator(store: FeedbackStore) -> None:
    report = store.add_upload(make_image(500), 16, "public:abcdef012345", consent=True, model_age=22.0)
    assert store.label(report.sample_id).status == Status.UNVERIFIED
    queue = ReviewQueue.for_submissions(store)
    item = queue.next("ann")
    assert item.sample_id == report.sample_id and item.reports == (("public:abcdef012345", 16.0),)
    assert item.label == 16.0  # the stranger's age is shown, to confirm or correct
    queue.submit(item, 17, "ann")
    assert store.label(report.sample_id).status != Status.UNVERIFIED


def test_unscored_items_are_handed_out_at_once_and_scores_reorder_them(store: FeedbackStore) -> None:
    queue = ReviewQueue.for_dataset(store, small_dataset(), source="utkface")  # nothing scored yet: open anyway
    assert [i.index for i in queue.items()] == [0, 1, 2, 3, 4, 5]  # labels nearest 18 or 25 first
    assert queue.next("ann").index == 0
    ids = [c.sample_id for c in queue.candidates()]
    queue.set_scores({ids[5]: (20.0, 2.0)})  # labelled 70, the model says 20 ± 2: suspicion 25, first now
    assert queue.items("bob")[0].index == 5
    queue.set_scores({ids[1]: (30.0, 5.0)})  # the model agrees: behind every unscored item
    assert [i.index for i in queue.items("bob")][-1] == 1


def test_a_click_never_reads_the_whole_queue(store: FeedbackStore, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = ReviewQueue.for_dataset(store, small_dataset(), predictions=(MODEL, SPREAD), source="utkface")
    queue.submit(queue.next("bob"), None, "bob", confirm=True)
    full_reads, since = [], []
    for name in ("labels", "votes_by_sample", "samples", "votes"):  # what the old page called per click
        monkeypatch.setattr(store, name, lambda *a, _name=name, **k: full_reads.append(_name))
    original = store.votes_since
    monkeypatch.setattr(store, "votes_since", lambda after, *a, **k: since.append(after) or original(after, *a, **k))
    item = queue.next("ann")
    queue.submit(item, 33, "ann")
    queue.skip(queue.next("ann"), "ann")
    queue.undo("ann")
    assert full_reads == [] and since  # only the votes appended since the queue's last look were read
