from pathlib import Path

from edge.transport.outbox import Outbox


def test_put_load_ack_round_trip(tmp_path: Path, item_factory, jpeg_factory) -> None:
    box = Outbox(tmp_path / "outbox")
    jpeg = jpeg_factory()
    name = box.put(item_factory(1), jpeg)
    assert box.depth() == 1
    [taken] = box.take(10)
    assert taken == name
    pending = box.load(name)
    assert pending is not None and pending.frame_id == "line-1:cam0:boot1:1" and pending.jpeg == jpeg
    box.ack(name)
    assert box.depth() == 0
    assert not list((tmp_path / "outbox" / "pending").iterdir())


def test_items_survive_a_restart_in_order(tmp_path: Path, item_factory, jpeg_factory) -> None:
    box = Outbox(tmp_path / "outbox")
    names = [box.put(item_factory(i), jpeg_factory(i)) for i in range(5)]
    box.take(2)  # in flight when the process dies: still on disk
    (tmp_path / "outbox" / "pending" / ".half-written.item.1.1.tmp").write_bytes(b"partial")
    reopened = Outbox(tmp_path / "outbox")
    assert reopened.depth() == 5
    assert reopened.counters["recovered"] == 5
    assert reopened.take(10) == names
    assert not list((tmp_path / "outbox" / "pending").glob(".*"))


def test_corrupt_item_file_is_kept_in_rejected_and_counted(tmp_path: Path, item_factory, jpeg_factory) -> None:
    box = Outbox(tmp_path / "outbox")
    name = box.put(item_factory(1), jpeg_factory())
    (tmp_path / "outbox" / "pending" / name).write_bytes(b"\x00\x00\x00\x05{bad")
    assert box.load(name) is None
    assert box.counters["read_errors"] == 1
    assert (tmp_path / "outbox" / "rejected" / name).exists()
    assert box.depth() == 0


def test_requeue_puts_items_back_at_the_head(tmp_path: Path, item_factory, jpeg_factory) -> None:
    box = Outbox(tmp_path / "outbox")
    names = [box.put(item_factory(i), jpeg_factory(i)) for i in range(3)]
    first_two = box.take(2)
    box.requeue(first_two)
    assert box.take(3) == names
