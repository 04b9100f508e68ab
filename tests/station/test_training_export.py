"""edge.station.training_export on a real SQLite station: items stored, reviewed and undone through the Store."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from edge.config import StationConfig
from edge.station.store import Store
from edge.station.training_export import ReviewedFrame, ask_again, reviewed_frames, station_url


@pytest.fixture
def line(store: Store, make_item, jpeg, region):
    """Six items of line-1 and one of line-2, ids 1..7; some reviewed below by each test."""
    items = [
        make_item(verdict="crack", uncertainty=0.7),                                            # 1
        make_item(verdict="good", regions=[], uncertainty=0.4, reason="sampled"),               # 2
        make_item(verdict="crack", uncertainty=0.8, reason="unknown_frame", width=320, height=240,
                  regions=[region(), region(x=150, y=160, w=40, h=30, defect_class="spot")]),  # 3
        make_item(verdict="spot", uncertainty=0.6, reason="ood"),                               # 4
        make_item(verdict="crack", uncertainty=0.5),                                            # 5 stays pending
        make_item(verdict="crack", uncertainty=0.55),                                           # 6
        make_item(line_id="line-2", frame_id="line-2:cam0:boot1:1", verdict="crack"),           # 7 other line
    ]
    assert store.ingest.add_items([(item, jpeg(seed=i)) for i, item in enumerate(items)]) == [True] * len(items)
    return items


def test_each_reviewed_item_once_with_its_latest_review(store: Store, line):
    store.reviews.add(1, "accept", "ana", now=1000.0)
    store.reviews.add(2, "relabel", "ana", defect_class="spot", now=1001.0)   # daemon said good: a miss
    store.reviews.add(3, "reject", "ben", now=1002.0)                          # false alarm: good
    store.reviews.add(4, "accept", "ana", now=1003.0)
    store.reviews.add(4, "relabel", "ben", defect_class="crack", now=1004.0)  # reviewed again: ben's answer wins
    store.reviews.add(7, "accept", "ana", now=1005.0)

    frames = reviewed_frames(store, "line-1")
    assert [f.item_id for f in frames] == [1, 2, 3, 4]  # oldest review first; 5 pending, 6 unreviewed, 7 line-2
    by_id = {f.item_id: f for f in frames}

    one = by_id[1]
    assert isinstance(one, ReviewedFrame)
    assert (one.verdict, one.final_verdict, one.defect_class, one.decision, one.reviewer) == (
        "crack", "crack", "crack", "accept", "ana")
    assert not one.wrong and not one.wrong_good_defect and not one.is_good
    assert one.frame_id == line[0].frame_id and one.line_id == "line-1"
    assert one.image_path.is_absolute() and one.image_path.is_file()
    assert one.image_path.is_relative_to(store.storage_dir.resolve())
    assert one.image_path.read_bytes().startswith(b"\xff\xd8")
    assert one.reviewed_wall == 1000.0 and one.uncertainty == 0.7 and one.reason == "uncertain"
    assert (one.pack_version, one.profile_version) == ("starter-0.1.0", "line-1/v3")
    assert one.class_scores == {"good": 0.31, "crack": 0.52, "spot": 0.17}
    assert [(r.x, r.y, r.w, r.h, r.defect_class) for r in one.regions] == [(30, 38, 62, 18, "crack")]

    two = by_id[2]
    assert (two.verdict, two.final_verdict, two.defect_class, two.reason) == ("good", "spot", "spot", "sampled")
    assert two.wrong and two.wrong_good_defect and two.regions == ()

    three = by_id[3]
    assert (three.final_verdict, three.defect_class, three.is_good, three.reason) == (
        "good", None, True, "unknown_frame")
    assert (three.width, three.height) == (320, 240)
    assert three.regions == ()  # the operator said good: the model's boxes are not defects

    four = by_id[4]
    assert (four.verdict, four.final_verdict, four.decision, four.reviewer, four.reviewed_wall, four.reason) == (
        "spot", "crack", "relabel", "ben", 1004.0, "ood")
    assert four.wrong and not four.wrong_good_defect

    assert [f.item_id for f in reviewed_frames(store, "line-2")] == [7]
    assert reviewed_frames(store, "no-such-line") == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.final_verdict = "good"  # type: ignore[misc]


def test_since_wall_keeps_items_reviewed_from_then_on(store: Store, line):
    store.reviews.add(1, "accept", "ana", now=1000.0)
    store.reviews.add(3, "accept", "ana", now=2000.0)
    store.reviews.add(1, "reject", "ben", now=3000.0)  # item 1's latest review is new again
    assert [f.item_id for f in reviewed_frames(store, "line-1", since_wall=2000.0)] == [3, 1]
    assert [f.item_id for f in reviewed_frames(store, "line-1", since_wall=2500.0)] == [1]
    assert reviewed_frames(store, "line-1", since_wall=3000.5) == []


def test_an_undone_review_no_longer_counts(store: Store, line):
    store.reviews.add(1, "accept", "ana", now=1000.0)
    store.reviews.add(4, "accept", "ben", now=1001.0)
    store.reviews.add(4, "relabel", "ana", defect_class="good", now=1002.0)
    store.reviews.add(6, "reject", "ana", now=1003.0)
    assert store.reviews.undo_last("ana", minutes=5) == 6   # item 6 back in the queue: skipped
    assert store.reviews.undo_last("ana", minutes=5) == 4   # item 4 keeps ben's earlier answer
    frames = {f.item_id: f for f in reviewed_frames(store, "line-1")}
    assert sorted(frames) == [1, 4]
    assert (frames[4].reviewer, frames[4].final_verdict, frames[4].decision) == ("ben", "spot", "accept")


def test_items_whose_image_is_missing_are_skipped_counted_and_logged(store: Store, line, caplog):
    for item_id in (1, 3, 4):
        store.reviews.add(item_id, "accept", "ana")
    for item_id in (1, 4):
        path = store.queue.image_file(item_id)
        assert path is not None
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="edge.station.training_export"):
        frames = reviewed_frames(store, "line-1")
    assert [f.item_id for f in frames] == [3]
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.station.training_export"]
    assert len(lines) == 1, lines
    assert "skipped 2 of 3" in lines[0] and line[0].frame_id in lines[0]


def test_opens_the_database_from_a_path_a_url_or_the_station_config(store: Store, line, db_url: str,
                                                                     storage_dir: Path, tmp_path: Path):
    store.reviews.add(1, "accept", "ana")
    store.reviews.add(2, "accept", "ana")
    db_path = Path(db_url.removeprefix("sqlite:///"))
    expected = [f.frame_id for f in reviewed_frames(store, "line-1")]
    assert len(expected) == 2
    by_path = reviewed_frames(db_path, "line-1", storage_dir=storage_dir)
    by_url = reviewed_frames(db_url, "line-1", storage_dir=str(storage_dir))
    by_config = reviewed_frames(StationConfig(database_url=db_url, storage_dir=storage_dir), "line-1")
    for frames in (by_path, by_url, by_config):
        assert [f.frame_id for f in frames] == expected
        assert all(f.image_path.is_file() for f in frames)
    assert station_url(db_path) == f"sqlite:///{db_path.resolve()}"
    assert station_url("postgresql://u@h/db") == "postgresql://u@h/db"

    with pytest.raises(ValueError, match="storage_dir"):
        reviewed_frames(db_path, "line-1")
    missing = tmp_path / "nowhere" / "station.db"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reviewed_frames(missing, "line-1", storage_dir=storage_dir)
    assert not missing.exists()  # not created as an empty database


def test_a_review_asked_again_leaves_the_export_until_it_is_answered_again(store: Store, line, tmp_path: Path):
    """`lineside train --recheck`: a reviewed item goes back to the queue as a single item, with an audit row; the
    export leaves it out until someone answers it again, and then carries the new answer."""
    store.reviews.add(1, "accept", "ana", now=1000.0)
    store.reviews.add(2, "relabel", "ana", defect_class="spot", now=1001.0)
    sent = ask_again(store, [2, 2, 5, 99, 6], "lineside train")
    assert sent == [2], "5 is pending, 6 never reviewed, 99 is not there: only the reviewed one goes back"
    item = store.queue.get_item(2)
    assert item.status == "pending" and not item.awaits_second_review and item.group_id is None
    assert item.latest_review is not None and item.latest_review.final_verdict == "spot"
    (audit,) = store.audit.recent(item_id=2, action="recheck")
    assert audit.username == "lineside train" and audit.before["review"]["final_verdict"] == "spot"
    assert audit.before["status"] == "reviewed" and audit.after == {"status": "pending"}
    assert [f.item_id for f in reviewed_frames(store, "line-1")] == [1]
    assert ask_again(store, [2], "lineside train") == [], "waiting already: not sent twice"

    store.reviews.add(2, "accept", "ana", now=1010.0)  # the same operator may answer it: an ordinary review
    assert store.queue.get_item(2).status == "reviewed"
    again = {f.item_id: f for f in reviewed_frames(store, "line-1")}
    assert again[2].final_verdict == "good" and again[2].reviewed_wall == 1010.0
    with pytest.raises(FileNotFoundError, match="missing.db"):  # a mistyped station is an error, not a new one
        ask_again(str(tmp_path / "missing.db"), [1], "lineside train", storage_dir=tmp_path)
