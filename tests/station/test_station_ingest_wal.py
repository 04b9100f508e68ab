"""The SQLite WAL stays bounded: after a burst of items the ingest loop truncates it once the socket is quiet."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import zmq

from edge.station.ingest import IngestServer, sqlite_wal_checkpoint
from edge.station.store import Store
from edge.transport.schema import encode_item

ITEMS = 800
WAL_CEILING = 16 * 1024 * 1024  # SQLite's own checkpoints every ~1,000 pages keep it near 4 MB while busy


def _wal(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_wal_is_truncated_after_a_burst_and_bounded_during_it(tmp_path: Path, make_item, jpeg):
    db = tmp_path / "station.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    ingest = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=20,
                          checkpoint=lambda: sqlite_wal_checkpoint(store.engine), checkpoint_idle_s=0.3)
    ingest.start()
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, _wal(db))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(ingest.endpoint)
    image = jpeg(64, 48)
    try:
        for _window in range(ITEMS // 100):  # pipelined in windows of 100, like the sender's max_in_flight
            for _ in range(100):
                sock.send_multipart(encode_item(make_item(), image))
            for _ in range(100):
                assert sock.poll(10_000, zmq.POLLIN)
                assert sock.recv_multipart()[0] == b"ack"
        assert ingest.counters["stored"] == ITEMS
        deadline = time.monotonic() + 10
        while ingest.counters["checkpoints"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.counters["checkpoints"] >= 1
        assert _wal(db) == 0, "TRUNCATE leaves an empty WAL"
        print(f"WAL peak {peak} bytes over {ITEMS} items")
        assert 0 < peak < WAL_CEILING, peak
        with sqlite3.connect(db) as conn:  # the data is in the main file now
            assert conn.execute("SELECT count(*) FROM review_items").fetchone()[0] == ITEMS
    finally:
        sampling.set()
        sampler.join(2)
        sock.close()
        ctx.term()
        ingest.stop()
        store.close()


def test_a_reader_holding_the_wal_makes_the_checkpoint_wait_not_the_ingest(tmp_path: Path, make_item, jpeg):
    db = tmp_path / "station.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    try:
        store.ingest.add_item(make_item(), jpeg())
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM review_items").fetchone()  # a snapshot that pins the WAL
        store.ingest.add_item(make_item(), jpeg())
        started = time.monotonic()
        assert sqlite_wal_checkpoint(store.engine, busy_timeout_ms=100) is False
        assert time.monotonic() - started < 2
        reader.execute("COMMIT")
        reader.close()
        assert sqlite_wal_checkpoint(store.engine) is True
        assert _wal(db) == 0
        assert store.ingest.add_item(make_item(), jpeg())  # the busy timeout was restored for ordinary writes
    finally:
        store.close()
