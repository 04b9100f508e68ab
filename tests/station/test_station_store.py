"""Store on a real SQLite file: exactly-once, image files, queue order, reviews, durability settings."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from edge.station.store import ItemNotFound, ReviewError, Store
from edge.station.tables import RegionRow, ReviewItemRow


def _rows(store: Store, model: type) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_same_frame_three_times_is_stored_once(store, make_item, jpeg):
    item = make_item()
    results = [store.ingest.add_item(item, jpeg()) for _ in range(3)]
    assert results == [True, False, False]
    assert _rows(store, ReviewItemRow) == 1
    assert _rows(store, RegionRow) == 1


def test_concurrent_duplicates_are_settled_by_the_unique_constraint(store, make_item, jpeg):
    item, data = make_item(), jpeg()
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def add() -> None:
        barrier.wait()
        results.append(store.ingest.add_item(item, data))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, False, False, True]
    assert _rows(store, ReviewItemRow) == 1


def test_image_is_a_readable_file_under_line_dir(store, storage_dir, make_item, jpeg):
    item, data = make_item(), jpeg()
    store.ingest.add_item(item, data)
    path = storage_dir / item.line_id / f"{item.frame_id}.jpg"
    assert path.read_bytes() == data
    img = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (250, 250, 3)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    stored = store.queue.get_item(1)
    assert stored is not None and stored.image_path == f"{item.line_id}/{item.frame_id}.jpg"
    assert store.queue.image_file(1) == path.resolve()


def test_hostile_line_id_cannot_leave_storage_dir(store, storage_dir, make_item, jpeg):
    # the wire schema refuses such a line id; the store must hold even if a bad one got past it
    import pydantic
    with pytest.raises(pydantic.ValidationError):
        make_item(line_id="../../outside")
    good = make_item()
    hostile = good.model_copy(update={"line_id": "../../outside"})
    store.ingest.add_item(hostile, jpeg())
    path = store.queue.image_file(1)
    assert path is not None and path.is_file()
    assert path.is_relative_to(storage_dir.resolve())


def test_a_batch_writes_each_image_under_its_own_line_dir(store, storage_dir, make_item, jpeg):
    """The batch path resolves each line directory once; the files land where the one-item path puts them."""
    items = [make_item(), make_item(line_id="line-2", frame_id="line-2:cam0:boot1:7"), make_item()]
    images = [jpeg() for _ in items]
    assert store.ingest.add_items(list(zip(items, images, strict=True))) == [True, True, True]
    for item, data in zip(items, images, strict=True):
        assert (storage_dir / item.line_id / f"{item.frame_id}.jpg").read_bytes() == data
    assert sorted(p.name for p in storage_dir.iterdir()) == ["line-1", "line-2"]


def test_a_line_dir_linked_out_of_the_storage_dir_is_refused_by_the_batch_path(store, storage_dir, tmp_path,
                                                                                  make_item, jpeg):
    from edge.station.store.imagefiles import ImagePathError

    outside = tmp_path / "outside"
    outside.mkdir()
    storage_dir.mkdir(exist_ok=True)
    (storage_dir / "line-1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ImagePathError, match="leaves the storage directory"):
        store.ingest.add_items([(make_item(), jpeg()), (make_item(), jpeg())])
    assert _rows(store, ReviewItemRow) == 0
    assert list(outside.iterdir()) == []


def test_the_batch_resolver_agrees_with_resolve(storage_dir):
    from edge.station.store.imagefiles import relative_image_path, resolve, resolver

    (storage_dir / "real").mkdir(parents=True)
    (storage_dir / "linked").symlink_to(storage_dir / "real", target_is_directory=True)  # inside: allowed
    one = resolver(storage_dir)
    for line, frame in [("line-1", "line-1:cam0:boot1:1"), ("linked", "f:1"), ("../../x", "a/../b"), ("", "..")]:
        relative = relative_image_path(line, frame)
        assert one(relative) == resolve(storage_dir, relative)


def test_queue_is_pending_most_uncertain_first(store, make_item, jpeg):
    for u in (0.2, 0.9, 0.5, 0.9):
        store.ingest.add_item(make_item(uncertainty=u), jpeg())
    queue = store.queue.pending()
    assert [(i.uncertainty, i.id) for i in queue] == [(0.9, 2), (0.9, 4), (0.5, 3), (0.2, 1)]
    assert [i.id for i in store.queue.pending(limit=2, offset=1)] == [4, 3]
    assert store.queue.next_pending_id() == 2
    assert store.queue.next_pending_id(exclude=2) == 4


def test_review_marks_item_reviewed_and_latest_review_wins(store, make_item, jpeg):
    store.ingest.add_item(make_item(uncertainty=0.7), jpeg())
    store.ingest.add_item(make_item(uncertainty=0.3), jpeg())
    first = store.reviews.add(1, "accept", "ana", seconds_spent=4.2)
    assert (first.final_verdict, first.defect_class) == ("crack", "crack")
    second = store.reviews.add(1, "relabel", "ben", defect_class="spot")
    item = store.queue.get_item(1)
    assert item is not None and item.status == "reviewed"
    assert [r.decision for r in item.reviews] == ["accept", "relabel"]
    assert item.latest_review == second and second.final_verdict == "spot"
    assert [i.id for i in store.queue.pending()] == [2]
    rejected = store.reviews.add(2, "reject", "ana")
    assert (rejected.final_verdict, rejected.defect_class) == ("good", None)
    counts = store.queue.counts()
    assert counts["by_status"] == {"pending": 0, "reviewed": 2}
    assert counts["reviews"] == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decision": "maybe"}, "unknown decision 'maybe'"),
    ({"decision": "relabel"}, "relabel needs defect_class"),
    ({"decision": "relabel", "defect_class": "hole"}, "unknown class 'hole'"),
    ({"decision": "accept", "defect_class": "spot"}, "only for relabel"),
    ({"decision": "accept", "reviewer": "  "}, "reviewer"),
])
def test_invalid_reviews_are_refused_with_a_reason(store, make_item, jpeg, kwargs, message):
    store.ingest.add_item(make_item(), jpeg())
    args = {"reviewer": "ana", **kwargs}
    with pytest.raises(ReviewError, match=message):
        store.reviews.add(1, **args)
    item = store.queue.get_item(1)
    assert item is not None and item.status == "pending" and item.reviews == []


def test_reject_of_a_good_verdict_is_refused(store, make_item, jpeg):
    store.ingest.add_item(make_item(verdict="good", regions=[]), jpeg())
    with pytest.raises(ReviewError, match="use relabel"):
        store.reviews.add(1, "reject", "ana")
    assert store.reviews.add(1, "relabel", "ana", defect_class="spot").final_verdict == "spot"


def test_review_of_missing_item(store):
    with pytest.raises(ItemNotFound):
        store.reviews.add(42, "accept", "ana")


def test_sqlite_is_wal_with_full_sync_and_foreign_keys(store):
    with store.engine.connect() as conn:
        pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                  for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
    assert pragma["journal_mode"] == "wal"
    assert pragma["synchronous"] == 2  # FULL
    assert pragma["foreign_keys"] == 1
    assert pragma["busy_timeout"] >= 1000


def test_everything_survives_reopen(db_url, storage_dir, make_item, jpeg):
    first = Store(db_url, storage_dir)
    item = make_item()
    assert first.ingest.add_item(item, jpeg())
    first.reviews.add(1, "accept", "ana")
    first.close()
    again = Store(db_url, storage_dir)
    try:
        assert not again.ingest.add_item(item, jpeg())  # still exactly once after a restart
        stored = again.queue.get_item(1)
        assert stored is not None and stored.frame_id == item.frame_id and stored.status == "reviewed"
        assert stored.regions[0].caption == item.regions[0].caption
        assert stored.class_scores == item.class_scores
        assert again.queue.image_file(1) is not None
    finally:
        again.close()


def test_failed_image_write_raises_and_stores_nothing(store, storage_dir, make_item, jpeg):
    (storage_dir / "line-1").write_bytes(b"a file where the line directory should be")
    with pytest.raises(OSError):
        store.ingest.add_item(make_item(), jpeg())
    assert _rows(store, ReviewItemRow) == 0

