"""The edge sender against the real station ingest, over loopback ZeroMQ, with a real SQLite file."""

import time
from pathlib import Path

from edge.config import TransportConfig
from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.tools.net import free_port
from edge.transport.outbox import Outbox
from edge.transport.sender import OutboxSender
from tests.conftest import wait_until


def _transport(port: int, tmp_path: Path) -> TransportConfig:
    return TransportConfig(station=f"tcp://127.0.0.1:{port}", outbox_dir=tmp_path / "outbox", ack_timeout_s=0.5,
                           retry_initial_s=0.1, retry_max_s=0.5, max_in_flight=8)


def test_every_item_reaches_the_station_once(tmp_path: Path, item_factory, jpeg_factory) -> None:
    port = free_port()
    store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
    ingest = IngestServer(store.ingest, f"tcp://127.0.0.1:{port}")
    ingest.start()
    cfg = _transport(port, tmp_path)
    outbox = Outbox(cfg.outbox_dir)
    sender = OutboxSender(outbox, cfg)
    sender.start()
    try:
        for i in range(40):
            outbox.put(item_factory(i), jpeg_factory(i))
        assert sender.drain(20), sender.status()
        assert sender.status()["state"] == "connected"
        ids = {v.frame_id for v in store.queue.list_items(status=None, limit=1000)}
        assert ids == {f"line-1:cam0:boot1:{i}" for i in range(40)}
        assert ingest.counters["stored"] == 40
    finally:
        sender.stop()
        sender.join(5)
        ingest.stop()
        store.close()


def test_unreachable_station_holds_items_then_drains_when_it_is_back(
        tmp_path: Path, item_factory, jpeg_factory) -> None:
    port = free_port()
    cfg = _transport(port, tmp_path)
    outbox = Outbox(cfg.outbox_dir)
    sender = OutboxSender(outbox, cfg)
    sender.start()
    store = None
    ingest = None
    try:
        for i in range(10):
            outbox.put(item_factory(i), jpeg_factory(i))
        assert wait_until(lambda: sender.status()["state"] == "unreachable", 5), sender.status()
        time.sleep(1.0)
        assert outbox.depth() == 10  # nothing lost while the station is away
        store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
        ingest = IngestServer(store.ingest, f"tcp://127.0.0.1:{port}")
        ingest.start()
        assert sender.drain(20), sender.status()
        assert len(store.queue.list_items(status=None, limit=100)) == 10
        assert sender.status()["state"] == "connected"
    finally:
        sender.stop()
        sender.join(5)
        if ingest is not None:
            ingest.stop()
        if store is not None:
            store.close()


def test_items_written_before_a_restart_are_sent_after_it(tmp_path: Path, item_factory, jpeg_factory) -> None:
    port = free_port()
    cfg = _transport(port, tmp_path)
    first = Outbox(cfg.outbox_dir)
    for i in range(5):
        first.put(item_factory(i), jpeg_factory(i))
    del first  # the daemon died here (its files stay)
    store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
    ingest = IngestServer(store.ingest, f"tcp://127.0.0.1:{port}")
    ingest.start()
    sender = OutboxSender(Outbox(cfg.outbox_dir), cfg)
    sender.start()
    try:
        assert sender.drain(20)
        assert len(store.queue.list_items(status=None, limit=100)) == 5
    finally:
        sender.stop()
        sender.join(5)
        ingest.stop()
        store.close()


def test_a_frame_put_twice_is_settled_by_one_ack(tmp_path: Path, item_factory, jpeg_factory) -> None:
    """A daemon killed between its outbox put and its own bookkeeping puts the frame again on restart: two files,
    one frame id. Both go in flight together; the station's one ack (the second copy is never sent) must delete
    both, or the outbox never drains."""
    port = free_port()
    store = Store(f"sqlite:///{tmp_path / 'station.db'}", tmp_path / "images")
    ingest = IngestServer(store.ingest, f"tcp://127.0.0.1:{port}")
    cfg = _transport(port, tmp_path)
    outbox = Outbox(cfg.outbox_dir)
    for i in (0, 1, 1, 2):
        outbox.put(item_factory(i), jpeg_factory(i))
    ingest.start()
    sender = OutboxSender(outbox, cfg)
    sender.start()
    try:
        assert sender.drain(10), sender.status()
        assert sender.status()["twins"] == 1
        assert outbox.depth() == 0 and not list((cfg.outbox_dir / "pending").iterdir())
        assert len(store.queue.list_items(status=None, limit=100)) == 3
    finally:
        sender.stop()
        sender.join(5)
        ingest.stop()
        store.close()
