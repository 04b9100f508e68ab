"""Fuzzing the station ingest over a real DEALER on loopback: ≥ 10,000 malformed, truncated, oversized and
wrong-schema messages. Nothing crashes, nothing bad is stored (not even a partial row or a stray image), every bad
message is answered with err, counted in ``malformed`` and logged with the sender's address, and a valid item sent
afterwards is still stored.

Every generated message is bad *by construction* (wrong frame count, wrong kind, a cut-off or non-JSON header, a
field given a value its type forbids, a missing or extra field, an image that is no whole JPEG), so the test
knows the right answer without asking the code under test. Hypothesis runs derandomized (fixed seed, no example
database), so CI sees the same 10,000+ messages every time.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from edge.station.ingest import IngestServer
from edge.station.store import Store
from edge.station.tables import RegionRow, ReviewItemRow
from edge.transport.schema import MAX_JPEG_BYTES, encode_item

BATCH = 20
QUICK_BATCHES = 510  # 510 × 20 = 10,200 bad messages
SLOW_BATCHES = 5_000  # 100,000
REPLY_TIMEOUT_MS = 10_000

# Values each field's type or constraint refuses (pydantic lax mode would coerce "5" to 5 or True to 1: none here).
WRONG: dict[str, list[Any]] = {
    "frame_id": [None, 5, "", "has space", "a/../b", "x" * 201, [], {}],
    "line_id": [None, 5, "", "bad/slash", "line é", "l" * 101],
    "source_id": [None, 5, "", "s" * 101, []],
    "seq": [-1, "abc", 1.5, None, [], {}],
    "captured_wall": ["abc", None, [], {}],
    "decided_wall": ["abc", None, [1.0]],
    "width": [0, -3, "abc", 2.5, None],
    "height": [0, -1, "x", None, {}],
    "verdict": [None, 3, [], {}],
    "class_scores": [None, [], "x", {"good": "high"}, {"good": None}, 5, {"good": [0.5]}],
    "anomaly_score": ["abc", None, []],
    "anomaly_threshold": ["abc", None, {}],
    "uncertainty": [-0.1, 1.5, "abc", None, 1e300],
    "reason": ["bored", None, 1, ""],
    "regions": [None, "x", [1], [{}], [{"x": -1}], {"x": 1}],
    "pack_version": [None, 1, []],
    "profile_version": [None, 2.5, {}],
    "schema_version": [0, 2, 99, "1", None, 1.5, -1],
}
REQUIRED = [k for k in WRONG if k not in ("reason", "regions")]  # the two with defaults stay valid when missing
REGION_WRONG: dict[str, list[Any]] = {"x": [-1, "a", None], "w": [0, -5], "area_pct": [101, -1, "big"],
                                      "caption": [None, 7], "defect_class": [None, []]}


def bad_messages(header: dict[str, Any], jpeg: bytes) -> st.SearchStrategy[list[bytes]]:
    """Multipart messages that the station must refuse, built around one valid header and JPEG."""
    good_header = json.dumps(header).encode()
    blob = st.binary(max_size=200)

    def with_field(key: str, value: Any) -> list[bytes]:
        return [b"item", json.dumps({**header, key: value}).encode(), jpeg]

    def region_mutation(key: str, value: Any) -> list[bytes]:
        region = {**header["regions"][0], key: value}
        return [b"item", json.dumps({**header, "regions": [region]}).encode(), jpeg]

    def without(key: str) -> list[bytes]:
        return [b"item", json.dumps({k: v for k, v in header.items() if k != key}).encode(), jpeg]

    def huge(key: str, n: int) -> list[bytes]:
        return with_field(key, "x" * n)

    wrong_field = st.sampled_from(sorted(WRONG)).flatmap(
        lambda k: st.sampled_from(WRONG[k]).map(lambda v: with_field(k, v)))
    wrong_region = st.sampled_from(sorted(REGION_WRONG)).flatmap(
        lambda k: st.sampled_from(REGION_WRONG[k]).map(lambda v: region_mutation(k, v)))
    return st.one_of(
        # wrong number of frames: random bytes, or the real parts with one missing / one too many
        st.lists(blob, min_size=1, max_size=6).filter(lambda f: len(f) != 3),
        st.just([b"item", good_header]),
        st.just([b"item", good_header, jpeg, b"extra"]),
        # wrong kind
        st.tuples(blob.filter(lambda k: k != b"item"), st.just(good_header), st.just(jpeg)).map(list),
        # header: random bytes, cut off, valid JSON of the wrong shape, wrong/missing/extra fields, huge strings
        st.tuples(st.just(b"item"), blob, st.just(jpeg)).map(list),
        st.integers(0, len(good_header) - 1).map(lambda n: [b"item", good_header[:n], jpeg]),
        st.sampled_from([b"[1, 2]", b'"item"', b"null", b"42", b"true", b"{}", b'{"schema_version": 1}']).map(
            lambda h: [b"item", h, jpeg]),
        wrong_field,
        wrong_region,
        st.sampled_from(REQUIRED).map(without),
        st.text(min_size=1, max_size=20).filter(lambda k: k not in header).map(lambda k: with_field(k, 1)),
        st.tuples(st.sampled_from(["frame_id", "line_id", "source_id"]), st.integers(1_000, 200_000)).map(
            lambda t: huge(*t)),
        # image: not a JPEG, or a JPEG cut short
        st.tuples(st.just(b"item"), st.just(good_header), blob.filter(lambda b: not b.startswith(b"\xff\xd8"))
                  ).map(list),
        st.integers(0, len(jpeg) - 1).map(lambda n: jpeg[:n]).filter(lambda b: not b.endswith(b"\xff\xd9")).map(
            lambda j: [b"item", good_header, j]),
        st.just([b"item", good_header, b"\xff\xd8" + bytes(100)]),
    )



def _rows(store: Store, table: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def _fuzz(batches: int, ingest: IngestServer, dealer: zmq.Socket, store: Store, storage_dir: Path,
          make_item: Callable[..., Any], jpeg: Callable[..., bytes], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.station.ingest")
    image = jpeg(64, 48)
    header = json.loads(make_item().model_dump_json())
    sent: Counter[str] = Counter()

    @settings(max_examples=batches, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(bad_messages(header, image), min_size=BATCH, max_size=BATCH), valid=st.booleans())
    def run(batch: list[list[bytes]], valid: bool) -> None:
        expected = [b"err"] * len(batch)
        for frames in batch:
            dealer.send_multipart(frames)
        if valid:  # a good item among the bad ones must still go through
            item = make_item()
            dealer.send_multipart(encode_item(item, image))
            expected.append(b"ack")
        replies = []
        for _ in expected:
            assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN), f"no reply after {len(replies)} of {len(expected)}"
            replies.append(dealer.recv_multipart())
        assert [r[0] for r in replies] == expected, [r for r in replies if r[0] != b"err"][:3]
        assert all(len(r) == 3 and r[2] for r in replies if r[0] == b"err"), "every err carries a reason"
        sent["bad"] += len(batch)
        sent["valid"] += valid

    run()
    assert sent["bad"] >= batches * BATCH
    final = make_item()
    dealer.send_multipart(encode_item(final, image))
    assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)
    assert dealer.recv_multipart() == [b"ack", final.frame_id.encode()]
    assert ingest.is_alive()

    counters = ingest.counters
    assert counters["malformed"] == sent["bad"]
    assert counters["stored"] == sent["valid"] + 1
    assert counters["errors"] == 0
    # no partial rows, no stray images: exactly the valid items, each with its one region and one file
    assert _rows(store, ReviewItemRow) == sent["valid"] + 1
    assert _rows(store, RegionRow) == sent["valid"] + 1
    assert sum(1 for p in storage_dir.rglob("*") if p.is_file()) == sent["valid"] + 1
    logged = sum(1 for r in caplog.records if "from peer 127.0.0.1" in r.getMessage())
    assert logged == sent["bad"], "each bad message is logged with the sender's address"


def test_ten_thousand_bad_messages(ingest, dealer, store, storage_dir, make_item, jpeg, caplog):
    _fuzz(QUICK_BATCHES, ingest, dealer, store, storage_dir, make_item, jpeg, caplog)


@pytest.mark.slow
def test_hundred_thousand_bad_messages(ingest, dealer, store, storage_dir, make_item, jpeg, caplog):
    _fuzz(SLOW_BATCHES, ingest, dealer, store, storage_dir, make_item, jpeg, caplog)


def test_oversized_image_is_refused_and_counted(ingest, dealer, store, make_item, jpeg):
    item = make_item()
    huge = b"\xff\xd8" + bytes(MAX_JPEG_BYTES) + b"\xff\xd9"
    dealer.send_multipart([b"item", item.model_dump_json().encode(), huge])
    assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)
    reply = dealer.recv_multipart()
    assert reply[:2] == [b"err", item.frame_id.encode()] and b"too large" in reply[2]
    assert ingest.counters["malformed"] == 1 and store.queue.counts()["items"] == 0
    dealer.send_multipart(encode_item(item, jpeg()))
    assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)
    assert dealer.recv_multipart() == [b"ack", item.frame_id.encode()]


def test_truncated_jpeg_names_the_problem(ingest, dealer, make_item, jpeg):
    item = make_item()
    dealer.send_multipart([b"item", item.model_dump_json().encode(), jpeg()[:-100]])
    assert dealer.poll(REPLY_TIMEOUT_MS, zmq.POLLIN)
    assert b"truncated" in dealer.recv_multipart()[2]
