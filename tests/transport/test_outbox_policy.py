"""Outbox bounds (by count and bytes) with both full policies, and the batch fsync policy."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge.config import TransportConfig
from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.tools.net import free_port
from edge.transport.outbox import FSYNC_BATCH_ITEMS, Outbox
from edge.transport.sender import OutboxSender


def _full_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.WARNING and ": full (" in r.getMessage())


def test_drop_oldest_keeps_the_newest_items_and_says_so_once(tmp_path: Path, item_factory, jpeg_factory, caplog):
    caplog.set_level(logging.INFO, logger="edge.transport.outbox")
    box = Outbox(tmp_path / "o", max_items=3, full_policy="drop_oldest")
    names = [box.put(item_factory(i), jpeg_factory(i)) for i in range(6)]
    assert all(names)
    assert box.depth() == 3
    assert box.take(10) == names[3:]
    assert sorted(p.name for p in (tmp_path / "o" / "pending").iterdir()) == names[3:]
    snap = box.snapshot()
    assert snap["evicted"] == 3 and snap["full_events"] == 1 and snap["full"] == 1 and snap["refused"] == 0
    assert _full_warnings(caplog) == 1, "one line per state change, not per evicted item"


def test_drop_oldest_by_bytes(tmp_path: Path, item_factory, jpeg_factory):
    probe = Outbox(tmp_path / "probe")
    probe.put(item_factory(0), jpeg_factory(0))
    one = probe.snapshot()["bytes"]
    box = Outbox(tmp_path / "o", max_bytes=int(one * 2.5))
    for i in range(5):
        box.put(item_factory(i), jpeg_factory(0))
    assert box.depth() == 2 and box.snapshot()["bytes"] <= one * 2.5
    assert box.snapshot()["evicted"] == 3


def test_refuse_newest_keeps_the_oldest_and_recovers(tmp_path: Path, item_factory, jpeg_factory, caplog):
    caplog.set_level(logging.INFO, logger="edge.transport.outbox")
    box = Outbox(tmp_path / "o", max_items=3, full_policy="refuse_newest")
    names = [box.put(item_factory(i), jpeg_factory(i)) for i in range(5)]
    assert names[3:] == [None, None]
    assert box.depth() == 3
    assert box.snapshot()["refused"] == 2 and box.snapshot()["full_events"] == 1
    [first] = box.take(1)
    assert first == names[0]
    box.ack(first)  # the station took one: room again
    assert box.put(item_factory(10), jpeg_factory(10)) is not None
    assert box.snapshot()["full"] == 0
    assert any("no longer full" in r.getMessage() and "2 items refused" in r.getMessage() for r in caplog.records)
    assert box.put(item_factory(11), jpeg_factory(11)) is None
    assert box.snapshot()["full_events"] == 2
    assert _full_warnings(caplog) == 2


def test_an_item_bigger_than_the_byte_bound_is_refused_under_either_policy(tmp_path, item_factory, jpeg_factory):
    box = Outbox(tmp_path / "o", max_bytes=100)
    assert box.put(item_factory(1), jpeg_factory(1)) is None
    assert box.snapshot()["refused"] == 1 and box.depth() == 0


def test_sizes_are_recovered_after_a_restart(tmp_path: Path, item_factory, jpeg_factory):
    box = Outbox(tmp_path / "o")
    for i in range(4):
        box.put(item_factory(i), jpeg_factory(i))
    total = box.snapshot()["bytes"]
    reopened = Outbox(tmp_path / "o", max_items=2)
    assert reopened.snapshot()["bytes"] == total
    reopened.put(item_factory(9), jpeg_factory(9))  # over the new bound: the three oldest go
    assert reopened.depth() == 2 and reopened.snapshot()["evicted"] == 3


def test_from_config_applies_every_setting(tmp_path: Path):
    cfg = TransportConfig(outbox_dir=tmp_path / "o", outbox_max_items=7, outbox_max_bytes=1000,
                          outbox_full_policy="refuse_newest", outbox_fsync="batch")
    box = Outbox.from_config(cfg)
    assert (box.max_items, box.max_bytes, box.full_policy, box.fsync) == (7, 1000, "refuse_newest", "batch")


def test_unknown_policy_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="full policy"):
        Outbox(tmp_path / "o", full_policy="drop_random")  # type: ignore[arg-type]


def test_batch_fsync_flushes_after_a_short_wait_or_a_full_batch(tmp_path: Path, item_factory, jpeg_factory):
    box = Outbox(tmp_path / "o", fsync="batch")
    for i in range(3):
        box.put(item_factory(i), jpeg_factory(i))
    assert box.snapshot()["fsyncs"] == 0  # not yet: within the 100 ms window
    time.sleep(0.15)
    box.flush_if_due()  # what the sender's loop does every ≤ 100 ms
    assert box.snapshot()["fsyncs"] == 1
    for i in range(FSYNC_BATCH_ITEMS):
        box.put(item_factory(100 + i), jpeg_factory(i))
    assert box.snapshot()["fsyncs"] >= 2
    reopened = Outbox(tmp_path / "o")
    assert reopened.depth() == 3 + FSYNC_BATCH_ITEMS
    assert all(reopened.load(n) is not None for n in reopened.take(1000))



@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_full_outbox_during_an_outage_then_the_station_gets_what_was_kept(
        policy, tmp_path: Path, item_factory, jpeg_factory):
    port = free_port()
    cfg = TransportConfig(station=f"tcp://127.0.0.1:{port}", outbox_dir=tmp_path / "o", ack_timeout_s=0.5,
                          retry_initial_s=0.1, retry_max_s=0.5, outbox_max_items=4, outbox_full_policy=policy,
                          outbox_fsync="batch")
    outbox = Outbox.from_config(cfg)
    sender = OutboxSender(outbox, cfg)
    sender.start()
    store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
    ingest = None
    try:
        for i in range(10):  # the station is away: routing goes on, the bound holds
            outbox.put(item_factory(i), jpeg_factory(i))
        assert outbox.depth() == 4
        ingest = IngestServer(store.ingest, f"tcp://127.0.0.1:{port}")
        ingest.start()
        assert sender.drain(20), sender.status()
        kept = range(6, 10) if policy == "drop_oldest" else range(4)
        assert {v.frame_id for v in store.queue.list_items(status=None)} == {f"line-1:cam0:boot1:{i}" for i in kept}
        snap = outbox.snapshot()
        assert snap["evicted" if policy == "drop_oldest" else "refused"] == 6
    finally:
        sender.stop()
        sender.join(5)
        if ingest is not None:
            ingest.stop()
        store.close()
