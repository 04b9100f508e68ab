"""CURVE on the edge–station link, over real loopback sockets: the allowed key delivers, an unknown key and a
plaintext peer get nothing stored and are counted, half a configuration fails at start-up."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from typer.testing import CliRunner

from edge.cli import app
from edge.config import ConfigError, StationConfig, TransportConfig, parse_config
from edge.station.ingest import IngestError, IngestServer
from edge.station.store import Store
from edge.transport.keys import KeyFileError, create_keypair, load_public, load_secret
from edge.transport.outbox import Outbox
from edge.transport.schema import encode_item
from edge.transport.sender import OutboxSender
from tests.conftest import wait_until


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """station, edge and intruder key pairs; only the edge's public key is in the allow-list folder."""
    out = tmp_path / "keys"
    paths: dict[str, Path] = {}
    for name in ("station", "edge", "intruder"):
        public, secret = create_keypair(out, name)
        paths[f"{name}.pub"], paths[f"{name}.sec"] = public, secret
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(paths["edge.pub"], allowed)
    paths["allowed"] = allowed
    return paths


@pytest.fixture
def curve_ingest(store: Store, keys: dict[str, Path]) -> Iterator[IngestServer]:
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", poll_ms=50, curve_secret_key=keys["station.sec"],
                          allowed_keys_dir=keys["allowed"])
    server.start()
    yield server
    server.stop()


def _transport(endpoint: str, tmp_path: Path, name: str, **curve: Path) -> TransportConfig:
    return TransportConfig(station=endpoint, outbox_dir=tmp_path / f"outbox-{name}", ack_timeout_s=0.5,
                           retry_initial_s=0.1, retry_max_s=0.5, max_in_flight=8, **curve)


def _run_sender(cfg: TransportConfig, items: int, make_item, jpeg) -> tuple[OutboxSender, Outbox]:
    outbox = Outbox(cfg.outbox_dir)
    for _ in range(items):
        outbox.put(make_item(), jpeg())
    sender = OutboxSender(outbox, cfg)
    sender.start()
    return sender, outbox


def test_allowed_key_delivers_every_item(curve_ingest, store, keys, tmp_path, make_item, jpeg):
    cfg = _transport(curve_ingest.endpoint, tmp_path, "edge", curve_secret_key=keys["edge.sec"],
                     station_public_key=keys["station.pub"])
    sender, outbox = _run_sender(cfg, 25, make_item, jpeg)
    try:
        assert sender.drain(20), sender.status()
        assert store.queue.counts()["items"] == 25
        assert curve_ingest.counters["stored"] == 25
        assert curve_ingest.counters["auth_rejected"] == 0
        assert sender.status()["state"] == "connected"
    finally:
        sender.stop()
        sender.join(5)


def test_unknown_key_is_refused_counted_and_logged(curve_ingest, store, keys, tmp_path, make_item, jpeg, caplog):
    caplog.set_level(logging.WARNING)
    cfg = _transport(curve_ingest.endpoint, tmp_path, "intruder", curve_secret_key=keys["intruder.sec"],
                     station_public_key=keys["station.pub"])
    sender, outbox = _run_sender(cfg, 5, make_item, jpeg)
    try:
        assert wait_until(lambda: curve_ingest.counters["auth_rejected"] >= 1, 10), curve_ingest.counters
        assert wait_until(lambda: sender.status()["state"] == "refused", 10), sender.status()
        assert "allowed_keys_dir" in str(sender.status()["detail"])
        time.sleep(0.5)
        assert store.queue.counts()["items"] == 0
        assert curve_ingest.counters["received"] == 0
        assert outbox.depth() == 5  # refused is not lost: the items wait at the edge
        intruder_key = load_public(keys["intruder.pub"]).decode()
        assert any("127.0.0.1" in r.getMessage() and intruder_key in r.getMessage() for r in caplog.records), \
            "the refusal names the peer's address and key"
    finally:
        sender.stop()
        sender.join(5)


def test_plaintext_peer_is_refused_and_counted(curve_ingest, store, tmp_path, make_item, jpeg):
    cfg = _transport(curve_ingest.endpoint, tmp_path, "plain")
    sender, outbox = _run_sender(cfg, 5, make_item, jpeg)
    try:
        assert wait_until(lambda: curve_ingest.counters["auth_rejected"] >= 1, 10), curve_ingest.counters
        assert wait_until(lambda: sender.status()["state"] == "refused", 10), sender.status()
        assert store.queue.counts()["items"] == 0
        assert outbox.depth() == 5
    finally:
        sender.stop()
        sender.join(5)


def test_plaintext_dealer_gets_no_reply(curve_ingest, store, make_item, jpeg):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(curve_ingest.endpoint)
        # the handshake may fail before the send: then there is no pipe and a blocking send would wait forever
        with contextlib.suppress(zmq.Again):
            sock.send_multipart(encode_item(make_item(), jpeg()), flags=zmq.NOBLOCK)
        assert not sock.poll(1000, zmq.POLLIN)
        assert wait_until(lambda: curve_ingest.counters["auth_rejected"] >= 1, 10), curve_ingest.counters
        assert curve_ingest.counters["received"] == 0 and store.queue.counts()["items"] == 0
    finally:
        sock.close()
        ctx.term()


def test_two_curve_stations_in_one_process_do_not_share_a_zap_handler(store, keys):
    servers = [IngestServer(store.ingest, "tcp://127.0.0.1:0", curve_secret_key=keys["station.sec"],
                            allowed_keys_dir=keys["allowed"]) for _ in range(2)]
    for server in servers:
        server.stop()


# ---- start-up errors ----

@pytest.mark.parametrize("given", ["curve_secret_key", "station_public_key"])
def test_half_configured_edge_curve_fails_at_start_up(given, tmp_path):
    with pytest.raises(ConfigError, match="CURVE is half configured") as err:
        parse_config({"line": {"source": {"kind": "folder", "path": "x"}, "transport": {given: "k"}}}, "cfg.yaml",
                     env={})
    assert "line.transport" in str(err.value) and given in str(err.value)


@pytest.mark.parametrize("given", ["curve_secret_key", "allowed_keys_dir"])
def test_half_configured_station_curve_fails_at_start_up(given):
    with pytest.raises(ConfigError, match=f"CURVE is half configured: {given} is set"):
        parse_config({"line": {"source": {"kind": "folder", "path": "x"}}, "station": {given: "k"}}, "cfg.yaml",
                     env={})


def test_missing_station_key_file_is_a_clear_ingest_error(store, keys, tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        IngestServer(store.ingest, "tcp://127.0.0.1:0", curve_secret_key=tmp_path / "nope.key_secret",
                     allowed_keys_dir=keys["allowed"])


def test_public_file_given_as_secret_is_a_clear_error(keys):
    with pytest.raises(KeyFileError, match="holds no secret key"):
        load_secret(keys["edge.pub"])


def test_missing_edge_key_file_fails_when_the_sender_is_made(tmp_path, keys):
    cfg = TransportConfig(outbox_dir=tmp_path / "o", curve_secret_key=tmp_path / "missing.key_secret",
                          station_public_key=keys["station.pub"])
    with pytest.raises(KeyFileError, match="missing.key_secret does not exist"):
        OutboxSender(Outbox(cfg.outbox_dir), cfg)


def test_station_config_round_trips_curve_paths(keys):
    cfg = StationConfig(curve_secret_key=keys["station.sec"], allowed_keys_dir=keys["allowed"])
    assert StationConfig.model_validate_json(cfg.model_dump_json()) == cfg


# ---- lineside keys ----

def test_keys_command_writes_a_pair_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["keys", "--out", str(tmp_path / "k"), "--name", "edge-7"])
    assert result.exit_code == 0, result.output
    pair = load_secret(tmp_path / "k" / "edge-7.key_secret")
    assert pair.public == load_public(tmp_path / "k" / "edge-7.key")
    assert (tmp_path / "k" / "edge-7.key_secret").stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["keys", "--out", str(tmp_path / "k"), "--name", "edge-7"])
    assert again.exit_code == 2 and "exists" in again.output
    assert load_secret(tmp_path / "k" / "edge-7.key_secret") == pair


def test_run_station_wires_curve_from_its_config(tmp_path, keys, make_item, jpeg):
    import threading

    from edge.station.server import run_station

    db = tmp_path / "db" / "station.db"
    cfg = StationConfig(ingest_bind="tcp://127.0.0.1:0", http_port=0, database_url=f"sqlite:///{db}",
                        storage_dir=tmp_path / "images", curve_secret_key=keys["station.sec"],
                        allowed_keys_dir=keys["allowed"])
    stop = threading.Event()
    ready: list[str] = []
    station = threading.Thread(target=run_station, args=(cfg, stop, lambda _url, ingest: ready.append(ingest)),
                               daemon=True)
    station.start()
    senders = []
    try:
        assert wait_until(lambda: bool(ready), 15), "station not ready"
        good = _transport(ready[0], tmp_path, "edge", curve_secret_key=keys["edge.sec"],
                          station_public_key=keys["station.pub"])
        plain = _transport(ready[0], tmp_path, "plain")
        senders = [_run_sender(good, 5, make_item, jpeg), _run_sender(plain, 3, make_item, jpeg)]
        assert senders[0][0].drain(20), senders[0][0].status()
        assert wait_until(lambda: senders[1][0].status()["state"] == "refused", 10), senders[1][0].status()
        assert senders[1][1].depth() == 3
    finally:
        for sender, _ in senders:
            sender.stop()
            sender.join(5)
        stop.set()
        station.join(15)
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    try:
        assert store.queue.counts()["items"] == 5
    finally:
        store.close()
