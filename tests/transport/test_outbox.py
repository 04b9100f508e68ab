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


def test_put_many_is_one_directory_flush_and_queues_only_durable_items(tmp_path: Path, item_factory, jpeg_factory,
                                                                       monkeypatch) -> None:
    from edge.transport import outbox as outbox_module

    box = Outbox(tmp_path / "outbox")
    flushes: list[int] = []  # items queued for the sender when each directory fsync happened
    real_fsync_dir = outbox_module.fsync_dir

    def fsync_dir(directory: Path) -> None:
        flushes.append(len(box.take(100)))
        real_fsync_dir(directory)

    monkeypatch.setattr(outbox_module, "fsync_dir", fsync_dir)
    names = box.put_many([(item_factory(i), jpeg_factory(i)) for i in range(5)])
    assert flushes == [0], "one directory flush, and nothing queued before it"
    assert all(isinstance(n, str) for n in names) and box.depth() == 5 and box.counters["queued"] == 5
    reopened = Outbox(tmp_path / "outbox")
    assert reopened.take(10) == names, "in order"


def test_put_many_keeps_the_bounds_within_a_group(tmp_path: Path, item_factory, jpeg_factory) -> None:
    newest = Outbox(tmp_path / "a", max_items=3)
    names = newest.put_many([(item_factory(i), jpeg_factory(i)) for i in range(5)])
    assert newest.depth() == 3 and newest.counters["evicted"] == 2
    assert sorted(p.name for p in newest.pending_dir.iterdir()) == names[2:], "the newest three"
    oldest = Outbox(tmp_path / "b", max_items=3, full_policy="refuse_newest")
    names = oldest.put_many([(item_factory(i), jpeg_factory(i)) for i in range(5)])
    assert names[3:] == [None, None] and oldest.depth() == 3 and oldest.counters["refused"] == 2


def test_put_many_a_write_error_costs_only_its_item(tmp_path: Path, item_factory, jpeg_factory, monkeypatch) -> None:
    from edge.transport import outbox as outbox_module
    from edge.transport.outbox import OutboxError

    real = outbox_module.replace_synced

    def replace_synced(path: Path, data: bytes) -> None:
        if path.name.endswith("_1.item"):
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(outbox_module, "replace_synced", replace_synced)
    box = Outbox(tmp_path / "outbox")
    results = box.put_many([(item_factory(i), jpeg_factory(i)) for i in range(3)])
    assert isinstance(results[1], OutboxError) and "No space left" in str(results[1])
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert box.depth() == 2 and box.counters["write_errors"] == 1
