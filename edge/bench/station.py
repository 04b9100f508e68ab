"""Station benchmarks: ingest (real ROUTER + SQLite, many DEALER senders) and the console's queue page.

``ingest`` runs the station's own ``IngestServer`` over a ``Store`` on a temporary SQLite file (WAL,
``synchronous=FULL``: every ack follows a durable commit), fed by N DEALER sockets in threads, each keeping a window
of items in flight, as the edge's sender does. Items carry a real JPEG of about 50 KB (a textile test image scaled
up). ``console`` fills a temporary database with 100,000 items by bulk insert (the logic of
``tests/station/bench_queue.py``) and times the queue page through the real app (FastAPI TestClient).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import zmq

from edge.transport.schema import KIND_ACK, ReviewItem, encode_item

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def jpeg_of_size(target_kb: int = 50) -> bytes:
    """A real JPEG (textile test image, scaled) as close to `target_kb` as a quality step gets, not above it."""
    import numpy as np

    from edge.bench.inference import decode, test_frames

    image = cv2.resize(decode(test_frames(1)[0]), (640, 480), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(0, 24, image.shape, dtype=np.uint8)  # sensor grain, as a camera has
    image = np.minimum(image.astype(np.int16) + noise, 255).astype(np.uint8)
    best = b""
    for quality in range(95, 20, -5):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= target_kb * 1000:
            best = data.tobytes()
            break
    return best or data.tobytes()


def _item(sender: int, seq: int) -> ReviewItem:
    now = time.time()
    return ReviewItem(frame_id=f"bench:cam{sender}:1:{seq}", line_id="bench", source_id=f"cam{sender}", seq=seq,
                      captured_wall=now, decided_wall=now, width=640, height=480, verdict="crack",
                      class_scores={"good": 0.3, "crack": 0.7}, anomaly_score=2.0, anomaly_threshold=1.0,
                      uncertainty=0.6, pack_version="bench", profile_version="bench/v1")


def bench_ingest(seconds: float = 10.0, senders: int = 4, window: int = 32, jpeg_kb: int = 50,
                 batch_items: int = 64, say: Say = _quiet) -> dict[str, Any]:
    """Acked items per second; ``batch_items=1`` is the one-commit-per-item server (the one before group commit)."""
    from edge.station.ingest import IngestServer
    from edge.station.store import Store

    jpeg = jpeg_of_size(jpeg_kb)
    with tempfile.TemporaryDirectory(prefix="lineside-bench-") as tmp:
        store = Store(f"sqlite:///{tmp}/station.db", Path(tmp) / "images")
        server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=20, batch_items=batch_items)
        server.start()
        ctx = zmq.Context()
        acked = [0] * senders
        stop = threading.Event()
        go = threading.Event()

        def send(k: int) -> None:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.endpoint)
            in_flight, seq = 0, 0
            go.wait()
            try:
                while not stop.is_set() or in_flight:
                    while in_flight < window and not stop.is_set():
                        sock.send_multipart(encode_item(_item(k, seq), jpeg), copy=False)
                        seq, in_flight = seq + 1, in_flight + 1
                    if sock.poll(1000):
                        frames = sock.recv_multipart()
                        in_flight -= 1
                        if frames[0] == KIND_ACK:
                            acked[k] += 1
                    elif stop.is_set():
                        break
            finally:
                sock.close()

        threads = [threading.Thread(target=send, args=(k,), name=f"bench-sender-{k}", daemon=True)
                   for k in range(senders)]
        for t in threads:
            t.start()
        say(f"ingest: {senders} senders × {window} in flight, {len(jpeg) // 1000} KB JPEGs, {seconds:g} s …")
        started = time.perf_counter()
        go.set()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        elapsed = time.perf_counter() - started
        server.stop()
        counters = server.counters
        stored = store.queue.counts()["items"]
        store.close()
        ctx.term()
    total = sum(acked)
    return {"ingest_fps": round(total / elapsed, 1), "ingest_acked": total, "ingest_stored": stored,
            "ingest_duplicates": counters["duplicates"], "ingest_errors": counters["errors"],
            "ingest_senders": senders, "ingest_jpeg_kb": round(len(jpeg) / 1000, 1)}


def fill_queue(store: Any, n: int, seed: int = 0) -> None:
    """`n` items (one region each, 5 % reviewed, two lines, three classes) by bulk insert, as bench_queue.py."""
    from sqlalchemy import insert

    from edge.station.tables import RegionRow, ReviewItemRow

    rng = random.Random(seed)
    now = time.time()
    classes = ("crack", "spot", "good")
    reasons = ("uncertain", "unknown_frame", "sampled")
    with store.engine.begin() as conn:
        for start in range(0, n, 10_000):
            items, regions = [], []
            for i in range(start + 1, min(n, start + 10_000) + 1):
                verdict = rng.choice(classes)
                items.append(dict(
                    id=i, frame_id=f"line-{i % 2 + 1}:cam0:b1:{i}", line_id=f"line-{i % 2 + 1}", source_id="cam0",
                    seq=i, captured_wall=now - (n - i) * 3.0, decided_wall=now - (n - i) * 3.0,
                    received_wall=now - (n - i) * 3.0, width=250, height=250, verdict=verdict,
                    class_scores={"good": 0.3, "crack": 0.4, "spot": 0.3}, anomaly_score=rng.random(),
                    anomaly_threshold=0.5, uncertainty=round(rng.random(), 3), reason=rng.choice(reasons),
                    pack_version="starter-0.1.0", profile_version="line-1/v3",
                    image_path=f"line-1/line-1:cam0:b1:{i}.jpg",
                    status="reviewed" if rng.random() < 0.05 else "pending"))
                regions.append(dict(item_id=i, x=30, y=38, w=62, h=18, area_px=1116, area_pct=1.8, peak=0.9,
                                    defect_class=verdict, location="upper-left",
                                    caption=f"{verdict}, upper-left, 62×18 px (1.8 %)", description="d",
                                    caption_score=0.3))
            conn.execute(insert(ReviewItemRow), items)
            conn.execute(insert(RegionRow), regions)


def bench_console(items: int = 100_000, repeat: int = 10, say: Say = _quiet) -> dict[str, Any]:
    """Median ms of the first queue page (most uncertain 50) and of the filtered page, logged in, real app."""
    try:
        from fastapi.testclient import TestClient
    except (ImportError, RuntimeError) as exc:  # TestClient needs httpx (the dev extra)
        raise RuntimeError(f"console bench needs the dev extra (httpx): {exc}") from None
    import logging

    from edge.station.console import create_app
    from edge.station.store import Store
    from edge.station.users import add_user

    for name in ("httpx", "httpx2"):  # one INFO line per request would drown the progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    password = "bench horse battery staple"
    with tempfile.TemporaryDirectory(prefix="lineside-bench-") as tmp:
        store = Store(f"sqlite:///{tmp}/station.db", Path(tmp) / "images")
        say(f"console: filling {items:,} items …")
        fill_queue(store, items)
        add_user(store, "bench", password, "reviewer")
        with TestClient(create_app(store, Path(tmp) / "images")) as client:
            _login(client, "bench", password)
            client.get("/")  # warm-up
            times: dict[str, list[float]] = {"first": [], "filtered": []}
            urls = {"first": "/", "filtered": "/?line=line-2&verdict=crack&reason=sampled"}
            say(f"console: timing the queue page {repeat}× …")
            for _ in range(repeat):
                for key, url in urls.items():
                    t0 = time.perf_counter()
                    r = client.get(url)
                    times[key].append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise RuntimeError(f"console bench: GET {url} answered HTTP {r.status_code}")
        store.close()
    return {"console_queue_ms": round(statistics.median(times["first"]), 1),
            "console_queue_max_ms": round(max(times["first"]), 1),
            "console_filtered_ms": round(statistics.median(times["filtered"]), 1), "console_items": items}


def _login(client: Any, username: str, password: str) -> None:
    import re

    pattern = re.compile(r'name="csrf-token" content="([^"]+)"')

    def token(html: str) -> str:
        match = pattern.search(html)
        if match is None:
            raise RuntimeError("console bench: page without csrf-token")
        return match.group(1)

    r = client.post("/login", data={"username": username, "password": password,
                                    "csrf_token": token(client.get("/login").text)}, follow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"console bench: login failed (HTTP {r.status_code})")
    client.headers["X-CSRF-Token"] = token(client.get("/").text)
