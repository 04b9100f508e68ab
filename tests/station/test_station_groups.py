"""Look-alike groups over a real store: grouped on arrival by embedding, one queue row per group, group leases that
never let two reviewers hold one frame, take-out, one answer with a review and an audit row per frame, undo, and
the training export counting each frame once. Runs on SQLite here and on PostgreSQL in test_pg_store.py."""

from __future__ import annotations

import numpy as np
import pytest

from edge.station.store import GroupingPolicy, LeaseConflict, QueueFilter, ReviewError, Store
from edge.station.store.groups import Grouper
from edge.station.training_export import reviewed_frames
from edge.transport.schema import embedding_b64

DIM = 256


def _direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _near(base: np.ndarray, seed: int, spread: float = 0.05) -> str:
    """An embedding within a few hundredths of cosine distance of ``base``: a look-alike frame."""
    v = base + spread * _direction(10_000 + seed)
    return embedding_b64(v / np.linalg.norm(v))


@pytest.fixture
def runs(store: Store, make_item, jpeg):
    """Three runs of look-alikes on line-1 (crack ×4, crack ×3 of another look, spot ×2), a crack item with no
    embedding, and a crack look-alike of the first run on line-2. Returns the item ids by run."""
    a, b = _direction(1), _direction(2)
    plan = ([("A", "line-1", "crack", _near(a, i), 0.5 + i / 100) for i in range(4)]
            + [("B", "line-1", "crack", _near(b, i), 0.4 + i / 100) for i in range(3)]
            + [("S", "line-1", "spot", _near(a, 10 + i), 0.3) for i in range(2)]
            + [("none", "line-1", "crack", None, 0.9), ("L2", "line-2", "crack", _near(a, 20), 0.6)])
    batch = [(make_item(line_id=line, frame_id=f"{line}:cam0:g:{n}", verdict=verdict, embedding=emb,
                        uncertainty=unc), jpeg()) for n, (_, line, verdict, emb, unc) in enumerate(plan)]
    store.ingest.add_items(batch[:5])  # the batch path and the one-item path group alike
    for item, data in batch[5:]:
        store.ingest.add_item(item, data)
    ids = store.queue.pending(limit=100)
    by_frame = {item.frame_id: item for item in ids}
    out: dict[str, list[int]] = {}
    for n, (run, line, *_rest) in enumerate(plan):
        out.setdefault(run, []).append(by_frame[f"{line}:cam0:g:{n}"].id)
    return out


def _group_of(store: Store, item_id: int) -> int | None:
    item = store.queue.get_item(item_id)
    assert item is not None
    return item.group_id


def test_look_alikes_of_one_line_and_verdict_share_a_group_and_nothing_else_does(store, runs):
    groups = {run: {_group_of(store, i) for i in ids} for run, ids in runs.items()}
    for run in ("A", "B", "S"):
        assert len(groups[run]) == 1 and None not in groups[run], (run, groups[run])
    assert len({next(iter(groups[r])) for r in ("A", "B", "S", "L2")}) == 4  # look, verdict and line all part
    assert groups["none"] == {None}  # no embedding: reviewed alone


def test_the_queue_shows_a_group_once_by_its_most_uncertain_member_with_its_size(store, runs):
    page = store.queue.page(QueueFilter(), "ana")
    shown = [item.id for item in page.items]
    assert shown == [runs["none"][0], runs["L2"][0], runs["A"][3], runs["B"][2], runs["S"][0]]
    sizes = {item.id: page.group_sizes.get(item.group_id) for item in page.items if item.group_id is not None}
    assert sizes == {runs["L2"][0]: 1, runs["A"][3]: 4, runs["B"][2]: 3, runs["S"][0]: 2}
    assert page.total == 11  # items, not rows
    # filtered: the head is the first member the filter shows; reviewed and all-status views list every item
    assert [i.id for i in store.queue.page(QueueFilter(verdict="spot"), "ana").items] == [runs["S"][0]]
    assert len(store.queue.page(QueueFilter(status="all"), "ana").items) == 11
    assert store.queue.claim_next("ana", 5) == runs["none"][0]
    assert store.queue.claim_next("ana", 5, exclude=[runs["none"][0]]) == runs["L2"][0]


def test_a_group_lease_covers_its_members_and_two_reviewers_never_hold_one_frame(store, runs):
    group = _group_of(store, runs["A"][0])
    assert group is not None
    ben_alone = runs["A"][1]
    store.queue.claim(ben_alone, "ben", 5)  # ben opened one member alone first: it stays his
    view = store.groups.claim(group, "ana", 5)
    assert view.mine == frozenset(set(runs["A"]) - {ben_alone}) and view.held_by_others == 1
    with pytest.raises(LeaseConflict):
        store.queue.claim(runs["A"][0], "ben", 5)
    holders = {i: store.queue.lease_of(i).username for i in runs["A"]}
    assert holders == {i: ("ben" if i == ben_alone else "ana") for i in runs["A"]}
    # ben's queue no longer shows the group (its head is ana's); when every member is taken, a claim is refused
    assert all(item.group_id != group for item in store.queue.page(QueueFilter(), "ben").items)
    store.queue.release(ben_alone, "ben")
    store.groups.claim(group, "ana", 5)
    with pytest.raises(LeaseConflict, match="someone else"):
        store.groups.claim(group, "ben", 5)
    store.groups.release(group, "ana")
    assert store.groups.claim(group, "ben", 5).mine == frozenset(runs["A"])


def test_take_one_out_answer_the_rest_with_one_review_and_audit_row_each(store, runs):
    group = _group_of(store, runs["A"][0])
    assert group is not None
    store.groups.claim(group, "ana", 5)
    odd = runs["A"][0]
    store.groups.take_out(group, odd, "ana", 5)
    assert _group_of(store, odd) is None and store.queue.lease_of(odd).username == "ana"
    saved = store.reviews.answer_group(group, "relabel", "ana", defect_class="spot", seconds_spent=6.0,
                                       comment="same stain on the whole run")
    rest = set(runs["A"]) - {odd}
    assert {r.item_id for r in saved} == rest
    assert all(r.group_id == group and r.final_verdict == "spot" and r.seconds_spent == 2.0 for r in saved)
    for item_id in rest:
        item = store.queue.get_item(item_id)
        assert item.status == "reviewed" and len(item.reviews) == 1 and store.queue.lease_of(item_id) is None
        audit = [e for e in store.audit.recent(100, item_id=item_id) if e.action == "review"]
        assert len(audit) == 1 and audit[0].after["group_id"] == group
    assert store.queue.get_item(odd).status == "pending"
    store.reviews.add(odd, "accept", "ana")
    frames = reviewed_frames(store, "line-1")
    assert sorted(f.item_id for f in frames) == sorted(runs["A"])  # each frame once
    with pytest.raises(ReviewError, match="hold no waiting frame"):  # answered: nothing left to answer twice
        store.reviews.answer_group(group, "accept", "ana")


def test_a_group_answer_is_refused_whole_when_it_does_not_fit_and_undone_whole(store, runs):
    group = _group_of(store, runs["B"][0])
    assert group is not None
    with pytest.raises(ReviewError, match="hold no waiting frame"):
        store.reviews.answer_group(group, "accept", "ana")  # not opened: no lease
    store.groups.claim(group, "ana", 5)
    with pytest.raises(ReviewError, match="unknown class"):
        store.reviews.answer_group(group, "relabel", "ana", defect_class="dent")
    assert all(store.queue.get_item(i).status == "pending" for i in runs["B"])
    store.reviews.answer_group(group, "reject", "ana")
    undone = store.reviews.undo_last_answer("ana", 5)
    assert undone is not None and undone.group_id == group and sorted(undone.item_ids) == sorted(runs["B"])
    for item_id in runs["B"]:
        item = store.queue.get_item(item_id)
        assert item.status == "pending" and item.reviews == [] and item.group_id == group
        assert store.queue.lease_of(item_id).username == "ana"


def test_an_answered_group_closes_and_a_restarted_station_joins_the_open_ones(store, db_url, storage_dir, runs,
                                                                               make_item, jpeg):
    a_group, b_group = _group_of(store, runs["A"][0]), _group_of(store, runs["B"][0])
    store.groups.claim(a_group, "ana", 5)
    store.reviews.answer_group(a_group, "accept", "ana")
    again = Store(db_url, storage_dir)  # a new process: the open centres come from the database
    try:
        late_a = make_item(frame_id="line-1:cam0:g:late-a", embedding=_near(_direction(1), 30))
        late_b = make_item(frame_id="line-1:cam0:g:late-b", embedding=_near(_direction(2), 31))
        again.ingest.add_items([(late_a, jpeg()), (late_b, jpeg())])
        by_frame = {i.frame_id: i for i in again.queue.pending(limit=100)}
        assert by_frame["line-1:cam0:g:late-b"].group_id == b_group  # still waiting: joined
        assert by_frame["line-1:cam0:g:late-a"].group_id not in (None, a_group)  # answered: a new group
    finally:
        again.close()


def test_a_group_takes_at_most_max_items_and_distance_zero_switches_grouping_off(db_url, storage_dir, make_item,
                                                                                 jpeg):
    base = _direction(5)
    store = Store(db_url, storage_dir, grouping=GroupingPolicy(max_items=3))
    try:
        store.ingest.add_items([(make_item(embedding=_near(base, i)), jpeg()) for i in range(7)])
        sizes = sorted(np.unique([i.group_id for i in store.queue.pending(limit=100)], return_counts=True)[1])
        assert sizes == [1, 3, 3]
    finally:
        store.close()
    grouper = Grouper(GroupingPolicy(distance=0))
    assert grouper.assign(None, "line-1", "crack", [base, base]) == [None, None]  # type: ignore[arg-type]
