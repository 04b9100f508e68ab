"""Per-minute decision summaries: edge summarizer → durable outbox → real DEALER/ROUTER → SQLite → /api/summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq
from console_support import login, make_user
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select

from edge.config import TransportConfig
from edge.route.summaries import DecisionSummarizer
from edge.station.console import create_app
from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.station.tables import DecisionSummaryRow
from edge.transport.outbox import Outbox
from edge.transport.schema import KIND_ACK, KIND_ERR, WireError, encode_item
from edge.transport.sender import OutboxSender
from edge.transport.summary import KIND_SUMMARY, DecisionSummary, decode_summary, encode_summary

T0 = 1_764_000_000  # a minute boundary (multiple of 60)


def _summary(minute: int = T0, part: int = 0, **over: object) -> DecisionSummary:
    data: dict[str, object] = dict(summary_id=f"summary/line-1/b1/{minute}/{part}", line_id="line-1", boot="b1",
                                   minute_wall=minute, frames=10, auto={"good": 7, "crack": 1},
                                   routed={"crack": 2}, reasons={"uncertain": 2},
                                   versions={"starter-0.1.0 line-1/v3": 10})
    data.update(over)
    return DecisionSummary.model_validate(data)


def _decision(seq: int, wall: float, verdict: str = "good", routed: bool = False) -> dict[str, object]:
    return {"frame_id": f"line-1:cam0:b1:{seq}", "wall": wall, "verdict": verdict, "routed": routed,
            "reason": "uncertain" if routed else None, "pack": "starter-0.1.0", "profile": "line-1/v3"}


def _rows(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(DecisionSummaryRow)) or 0)


def test_a_summary_must_add_up_and_name_itself() -> None:
    with pytest.raises(ValidationError, match="sum of auto and routed"):
        _summary(frames=11)
    with pytest.raises(ValidationError, match="summary_id does not name"):
        _summary(summary_id=f"summary/line-2/b1/{T0}/0")
    with pytest.raises(ValidationError):
        _summary(minute=T0 + 30)  # not a minute boundary
    with pytest.raises(ValidationError, match="negative"):
        _summary(auto={"good": 13, "crack": -1}, routed={"crack": -2})
    assert decode_summary(encode_summary(_summary())) == _summary()
    for frames, message in (([KIND_SUMMARY], "expected 2 frames"), ([KIND_SUMMARY, b"{"], "not JSON"),
                            ([KIND_SUMMARY, b"[]"], "not a JSON object"),
                            ([KIND_SUMMARY, json.dumps({"schema_version": 9}).encode()], "schema_version"),
                            ([KIND_SUMMARY, b" " * 70_000], "too large")):
        with pytest.raises(WireError, match=message):
            decode_summary(frames)


def test_ingest_stores_a_summary_once_and_refuses_a_bad_one(ingest, dealer, store, make_item, jpeg) -> None:
    summary = _summary()
    for _ in range(3):  # a resend after a lost ack: acked every time, stored once
        dealer.send_multipart(encode_summary(summary))
        assert dealer.poll(5000)
        assert dealer.recv_multipart() == [KIND_ACK, summary.summary_id.encode()]
    assert _rows(store) == 1
    bad = json.loads(summary.model_dump_json())
    bad["frames"] = 99
    dealer.send_multipart([KIND_SUMMARY, json.dumps(bad).encode()])
    assert dealer.poll(5000)
    kind, sid, reason = dealer.recv_multipart()
    assert (kind, sid) == (KIND_ERR, summary.summary_id.encode()) and b"sum of auto and routed" in reason
    item = make_item()
    dealer.send_multipart(encode_item(item, jpeg()))  # items on the same link are untouched
    assert dealer.poll(5000) and dealer.recv_multipart() == [KIND_ACK, item.frame_id.encode()]
    counters = ingest.counters
    assert ingest.summary_counters == {"stored": 1, "duplicates": 2} and counters["malformed"] == 1
    assert counters["stored"] == 1 and _rows(store) == 1


def test_summarizer_counts_minutes_sends_them_durably_and_the_api_adds_them_up(tmp_path: Path, store: Store,
                                                                                storage_dir: Path) -> None:
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=20)
    server.start()
    cfg = TransportConfig(station=server.endpoint, outbox_dir=tmp_path / "outbox", ack_timeout_s=1.0,
                          retry_initial_s=0.1, retry_max_s=0.5)
    now = [T0 + 30.0]
    outbox = Outbox.from_config(cfg)
    summarizer = DecisionSummarizer("line-1", outbox, boot="b1", clock=lambda: now[0], interval_s=3600)
    seq = 0
    # minute 0: 50 frames (3 routed cracks, 2 auto spots); minute 1: 20 good; then a late frame for minute 0
    for k in range(50):
        verdict = "crack" if k < 3 else "spot" if k < 5 else "good"
        summarizer.add(_decision(seq, T0 + k, verdict, routed=k < 3))
        seq += 1
    for k in range(20):
        summarizer.add(_decision(seq, T0 + 60 + k))
        seq += 1
    assert summarizer.flush() == 0  # minute 0 is not finished until 5 s after its end
    now[0] = T0 + 70.0
    assert summarizer.flush() == 1
    summarizer.add(_decision(seq, T0 + 59.5, "crack"))  # late: a second part of minute 0
    summarizer.add({"frame_id": "x", "verdict": "good"})  # no time: counted as bad, not summarised
    summarizer.close()  # minute 1 (unfinished) and the late part go too
    assert summarizer.counters == {"decisions": 71, "summaries": 3, "errors": 0, "bad_decisions": 1}
    del outbox  # the daemon died here: the summaries are files, sent by the next run
    outbox = Outbox.from_config(cfg)
    assert (outbox.depth(), outbox.waiting()) == (0, 3)  # summaries are not review items
    sender = OutboxSender(outbox, cfg)
    sender.start()
    try:
        assert sender.drain(20), sender.status()
    finally:
        sender.stop()
        sender.join(5)
        server.stop()
    assert _rows(store) == 3

    make_user(store, "ana")
    with TestClient(create_app(store, storage_dir)) as client:
        login(client, "ana")
        lines = client.get("/api/summaries").json()["lines"]
        assert lines == [{"line": "line-1", "first_minute_wall": T0, "last_minute_wall": T0 + 60, "frames": 71}]
        body = client.get("/api/summaries", params={"line": "line-1", "since": T0 - 3600, "until": T0 + 3600,
                                                    "bucket_s": 60}).json()
        b0, b1 = body["buckets"]
        assert (b0["start_wall"], b0["frames"], b0["summaries"]) == (T0, 51, 2)
        assert b0["auto"] == {"spot": 2, "good": 45, "crack": 1} and b0["routed"] == {"crack": 3}
        assert b0["defects"] == 6 and b0["defect_rate"] == pytest.approx(6 / 51, abs=1e-6)
        assert b0["routed_share"] == pytest.approx(3 / 51, abs=1e-6) and b0["reasons"] == {"uncertain": 3}
        assert (b1["frames"], b1["defects"]) == (20, 0)
        assert body["total"]["frames"] == 71 and body["total"]["versions"] == {"starter-0.1.0 line-1/v3": 71}
        hour = client.get("/api/summaries", params={"line": "line-1", "since": T0 - 86400, "until": T0 + 86400,
                                                    "bucket_s": 3600, "offset_s": 1800}).json()["buckets"]
        assert len(hour) == 1 and hour[0]["frames"] == 71 and (hour[0]["start_wall"] - 1800) % 3600 == 0
        for params in ({"line": "line-1", "bucket_s": 30}, {"line": "line-1", "bucket_s": 3600, "offset_s": 3600},
                       {"line": "line-1", "since": T0, "until": T0 - 1},
                       {"line": "line-1", "since": 0, "until": 1e9, "bucket_s": 60}):
            r = client.get("/api/summaries", params=params)
            assert r.status_code == 400 and r.json()["detail"], params
        assert client.get("/api/summaries", params={"line": "line-1", "bucket_s": "x"}).status_code == 422
    with TestClient(create_app(store, storage_dir)) as anonymous:
        assert anonymous.get("/api/summaries").status_code == 401


def test_a_sink_without_summaries_refuses_them_and_the_edge_keeps_them(tmp_path: Path, jpeg) -> None:
    class ItemsOnly:
        def add_item(self, item: object, data: bytes) -> bool:
            return True

    server = IngestServer(ItemsOnly(), "tcp://127.0.0.1:0", poll_ms=20)  # type: ignore[arg-type]
    server.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        sock.send_multipart(encode_summary(_summary()))
        assert sock.poll(5000)
        kind, _, reason = sock.recv_multipart()
        assert kind == KIND_ERR and b"does not store summaries" in reason
    finally:
        sock.close()
        ctx.term()
        server.stop()
