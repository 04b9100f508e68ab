"""Ingest over real ZeroMQ sockets: acks after commit, exactly-once, errors for bad messages, no crash."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from edge.station.ingest import IngestError, IngestServer
from edge.transport.schema import encode_item

REPLY_TIMEOUT_MS = 5000



def request(sock: zmq.Socket, frames: list[bytes], timeout_ms: int = REPLY_TIMEOUT_MS) -> list[bytes] | None:
    sock.send_multipart(frames)
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    return sock.recv_multipart()


def test_endpoint_reports_the_real_port(ingest):
    assert ingest.endpoint.startswith("tcp://127.0.0.1:")
    assert int(ingest.endpoint.rsplit(":", 1)[1]) > 0


def test_items_are_acked_after_they_are_stored(ingest, dealer, store, make_item, jpeg):
    items = [make_item(uncertainty=u) for u in (0.4, 0.8)]
    for item in items:
        reply = request(dealer, encode_item(item, jpeg()))
        assert reply == [b"ack", item.frame_id.encode()]
        assert any(i.frame_id == item.frame_id for i in store.queue.pending())  # committed before the ack
    assert [i.frame_id for i in store.queue.pending()] == [items[1].frame_id, items[0].frame_id]
    assert ingest.counters == {"received": 2, "stored": 2, "duplicates": 0, "malformed": 0, "errors": 0,
                               "auth_rejected": 0, "checkpoints": 0}


def test_duplicate_is_acked_but_stored_once(ingest, dealer, store, make_item, jpeg):
    item = make_item()
    for _ in range(3):
        assert request(dealer, encode_item(item, jpeg())) == [b"ack", item.frame_id.encode()]
    assert store.queue.counts()["items"] == 1
    assert ingest.counters["stored"] == 1 and ingest.counters["duplicates"] == 2


def _header(item, **over) -> bytes:
    data = json.loads(item.model_dump_json())
    data.update(over)
    return json.dumps(data).encode()


MALFORMED = {
    "wrong kind": lambda item, jpg: [b"hello", item.model_dump_json().encode(), jpg],
    "bad json": lambda item, jpg: [b"item", b'{"frame_id": "x", ', jpg],
    "not a jpeg": lambda item, jpg: [b"item", item.model_dump_json().encode(), b"\x89PNG\r\n\x1a\n...."],
    "two frames": lambda item, jpg: [b"item", item.model_dump_json().encode()],
    "four frames": lambda item, jpg: [b"item", item.model_dump_json().encode(), jpg, b"extra"],
    "schema_version 99": lambda item, jpg: [b"item", _header(item, schema_version=99), jpg],
    "uncertainty out of range": lambda item, jpg: [b"item", _header(item, uncertainty=3.0), jpg],
    "header not an object": lambda item, jpg: [b"item", b"[1, 2]", jpg],
    "binary garbage": lambda item, jpg: [b"item", b"\xff\xfe\x00", jpg],
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_message_gets_err_and_is_counted(case, ingest, dealer, store, make_item, jpeg):
    item = make_item()
    reply = request(dealer, MALFORMED[case](item, jpeg()))
    assert reply is not None and reply[0] == b"err", reply
    assert len(reply) == 3 and reply[2], "err carries a reason"
    assert ingest.counters["malformed"] == 1
    assert store.queue.counts()["items"] == 0
    # the server keeps serving
    good = make_item()
    assert request(dealer, encode_item(good, jpeg())) == [b"ack", good.frame_id.encode()]


def test_err_names_the_frame_when_it_can(ingest, dealer, make_item, jpeg):
    item = make_item()
    reply = request(dealer, [b"item", _header(item, schema_version=99), jpeg()])
    assert reply is not None
    assert reply[:2] == [b"err", item.frame_id.encode()]
    assert b"schema_version 99" in reply[2]


def test_all_malformed_kinds_in_a_row_then_still_serving(ingest, dealer, make_item, jpeg):
    item = make_item()
    for build in MALFORMED.values():
        reply = request(dealer, build(item, jpeg()))
        assert reply is not None and reply[0] == b"err"
    assert ingest.counters["malformed"] == len(MALFORMED)
    assert request(dealer, encode_item(item, jpeg())) == [b"ack", item.frame_id.encode()]
    assert ingest.is_alive()


def test_store_failure_is_not_acked_and_retry_succeeds(ingest, dealer, store, storage_dir, make_item, jpeg):
    blocker = storage_dir / "line-1"
    blocker.write_bytes(b"a file where the line directory should be")  # image write fails, like a full disk
    item = make_item()
    assert request(dealer, encode_item(item, jpeg()), timeout_ms=700) is None  # no ack: the edge retries
    assert ingest.counters["errors"] == 1
    assert store.queue.counts()["items"] == 0
    blocker.unlink()
    assert request(dealer, encode_item(item, jpeg())) == [b"ack", item.frame_id.encode()]
    assert ingest.counters["stored"] == 1


def test_stop_is_prompt(store):
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=100)
    server.start()
    started = time.monotonic()
    server.stop()
    assert not server.is_alive()
    assert time.monotonic() - started < 2.0


def test_bind_conflict_is_a_clear_error(ingest, store):
    with pytest.raises(IngestError, match="cannot bind"):
        IngestServer(store.ingest, ingest.endpoint)
