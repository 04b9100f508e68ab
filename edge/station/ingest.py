"""Ingest: the ZeroMQ ROUTER that receives review items from the edges and stores each exactly once.

Protocol (see ``edge.transport.schema``): an edge DEALER sends ``[b"item", header_json, jpeg]``; this server
answers ``[b"ack", frame_id]`` only after the item is committed (a duplicate is acked too: it is already
stored), or ``[b"err", frame_id_or_empty, reason]`` for a message that can never be accepted. When storing
fails for a reason that may pass (disk full, database locked too long) it answers nothing: the edge keeps the
item and retries. Every outcome has a counter; no input stops the loop.

CURVE. Given the station's secret key file and a folder of allowed edge public keys, the ROUTER is a CURVE server
and a ZAP handler (its own ZeroMQ context, so two stations in one process do not share one) accepts only those
keys. A plaintext peer or an unknown key never gets a message through; each refused handshake counts in
``auth_rejected`` (socket monitor) and is logged, rate-limited, with the peer's address and key where ZeroMQ tells
them (see ``edge.transport.handshake``). Every log line about a message names the peer by its address (and its
public key under CURVE), not only by the ROUTER's routing id.

Group commit. After each receive the loop also takes the messages already waiting (up to ``batch_items``, 64) and,
when the sink has ``add_items``, stores them in one transaction: one commit and one WAL fsync for the lot, the
image fsyncs in parallel. Nothing waits for a batch to fill: a lone item is stored at once. Acks still go out
only after the commit, one per item; if the batch cannot be stored, its items are stored one by one, so only the
item that fails goes unacked (and is retried by its edge).

WAL. SQLite checkpoints its write-ahead log by itself every ~1,000 pages, but never shrinks the file, and a
checkpoint that a reader blocked leaves the WAL to grow. So once the socket has been quiet for
``checkpoint_idle_s`` after storing something, the loop runs ``PRAGMA wal_checkpoint(TRUNCATE)`` (with a short
busy timeout, so a console reader delays it rather than the next item): the WAL goes back to zero bytes while
nobody is waiting. A checkpoint that could not finish is tried again at the next quiet moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq

from edge.config import ImageLimits
from edge.ops.logs import RateLimitedLog
from edge.transport.handshake import HandshakeWatch, LoggingAuthenticator
from edge.transport.keys import KeyFileError, count_public_keys, load_secret, make_curve_server
from edge.transport.schema import KIND_ACK, KIND_ERR, ReviewItem, WireError, decode_item, frame_id_of
from edge.transport.summary import KIND_SUMMARY, DecisionSummary, decode_summary, summary_id_of

log = logging.getLogger(__name__)

COUNTER_NAMES = ("received", "stored", "duplicates", "malformed", "errors", "auth_rejected", "checkpoints")


class ItemSink(Protocol):
    """Where items go (the station's: ``Store.ingest``). A sink may also offer ``add_items(list[(item, jpeg)]) ->
    list[bool]`` (one transaction for many; see ``edge.station.store.ingest``): the server then commits the items
    waiting on the socket together, and ``add_summary`` (decision summaries)."""

    def add_item(self, item: ReviewItem, jpeg: bytes) -> bool: ...


class IngestError(RuntimeError):
    """The ingest socket could not be set up (e.g. the address is in use)."""


class IngestServer(threading.Thread):
    """Receives items on a ROUTER socket bound at construction; ``start()`` serves, ``stop()`` ends it."""

    def __init__(self, store: ItemSink, bind: str, *, poll_ms: int = 100,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None,
                 curve_secret_key: Path | None = None, allowed_keys_dir: Path | None = None,
                 checkpoint: Callable[[], bool] | None = None, checkpoint_idle_s: float = 1.0,
                 batch_items: int = 64, image_limits: ImageLimits | None = None) -> None:
        super().__init__(name="station-ingest", daemon=True)
        self._store = store
        # a JPEG larger, or whose header promises more pixels, is refused as malformed, never decoded
        self._limits = image_limits or ImageLimits()
        self._poll_ms = poll_ms
        self._batch_items = max(1, batch_items)
        self._checkpoint = checkpoint
        self._checkpoint_idle_s = checkpoint_idle_s
        self._writes_since_checkpoint = 0
        self._last_message = time.monotonic()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        # held while items are stored: storage housekeeping (edge.station.retention) takes it to tell an image
        # between its rename and its commit from an orphan
        self.store_lock = threading.Lock()
        self._store_errors = RateLimitedLog(log)  # a full disk fails every item at every retry
        self._batch_warnings = RateLimitedLog(log)
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        # decision summaries apart from the items' counters (received and malformed ones count there too)
        self._summary_counters = {"stored": 0, "duplicates": 0}
        self._refusals = RateLimitedLog(log)
        self.curve = curve_secret_key is not None
        if self.curve != (allowed_keys_dir is not None):
            raise IngestError("station CURVE needs both curve_secret_key and allowed_keys_dir")
        self._auth: LoggingAuthenticator | None = None
        self._own_context = context is None and self.curve  # one ZAP handler per context: give CURVE its own
        self._context = zmq.Context() if self._own_context else (context or zmq.Context.instance())
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            if curve_secret_key is not None and allowed_keys_dir is not None:
                self._start_curve(curve_secret_key, allowed_keys_dir)
            self._socket.bind(bind)
        except KeyFileError as exc:
            self._close_all()
            raise IngestError(f"station ingest cannot set up CURVE: {exc}") from exc
        except zmq.ZMQError as exc:
            self._close_all()
            raise IngestError(f"station ingest cannot bind {bind}: {exc}") from exc
        self._watch = HandshakeWatch(self._socket)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("ingest listening on %s (%s)", self.endpoint,
                 f"CURVE, keys allowed from {allowed_keys_dir}" if self.curve else "plaintext, no authentication")

    def _start_curve(self, secret_file: Path, allowed_dir: Path) -> None:
        own = load_secret(secret_file)
        if count_public_keys(allowed_dir) == 0:
            log.warning("ingest: allowed_keys_dir %s holds no *.key file: every edge will be refused", allowed_dir)
        self._auth = LoggingAuthenticator(self._context)
        self._auth.start()
        # Any address may try; the key decides. The allow-list folder is read at start (restart to add a key).
        self._auth.configure_curve(domain="*", location=str(allowed_dir))
        make_curve_server(self._socket, own)

    def _close_all(self) -> None:
        if not self._socket.closed:
            self._socket.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self._context.term()

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the counters: received, stored, duplicates, malformed, errors, auth_rejected (refused
        handshakes: plaintext peers and unknown keys under CURVE), checkpoints (WAL truncations)."""
        with self._lock:
            return dict(self._counters)

    @property
    def summary_counters(self) -> dict[str, int]:
        """Decision summaries stored, and duplicates of stored ones acked again."""
        with self._lock:
            return dict(self._summary_counters)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait for it; the socket is closed when this returns."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
            if self.is_alive():
                log.error("ingest thread did not stop within %.1f s", timeout)
        elif not self._socket.closed:
            self._watch.close()
            self._close_all()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._watch.socket, zmq.POLLIN)
        try:
            while not self._stop_event.is_set():
                try:
                    ready = dict(poller.poll(self._poll_ms))
                    if self._watch.socket in ready:
                        self._count_refusals()
                    if self._socket not in ready:
                        self._checkpoint_if_idle()
                        continue
                    raws = self._receive_waiting(self._socket.recv_multipart(copy=False))
                except zmq.ContextTerminated:
                    log.warning("ingest: ZeroMQ context terminated, stopping")
                    return
                except zmq.ZMQError as exc:
                    self._count("errors")
                    log.error("ingest: receive failed: %s", exc)
                    self._stop_event.wait(self._poll_ms / 1000)
                    continue
                self._handle_batch([([f.bytes for f in raw], _peer_name(raw[-1], raw[0].bytes)) for raw in raws])
        finally:
            self._watch.close()
            self._close_all()
            log.info("ingest stopped; counters %s", self.counters)

    def _checkpoint_if_idle(self) -> None:
        if (self._checkpoint is None or self._writes_since_checkpoint == 0
                or time.monotonic() - self._last_message < self._checkpoint_idle_s):
            return
        try:
            done = self._checkpoint()
        except Exception as exc:  # a failed checkpoint loses nothing; the WAL still holds every commit
            self._count("errors")
            log.error("ingest: WAL checkpoint failed: %s: %s", type(exc).__name__, exc)
            done = False
        if done:
            self._writes_since_checkpoint = 0
            self._count("checkpoints")
        else:  # a reader held it up: try at the next quiet moment, not at every poll
            self._last_message = time.monotonic()

    def _count_refusals(self) -> None:
        for failure in self._watch.read():
            self._count("auth_rejected")
            self._refusals.warning(failure.kind, "ingest: refused a connection on %s: %s", self.endpoint,
                                   failure.detail)

    def _receive_waiting(self, first: list[zmq.Frame]) -> list[list[zmq.Frame]]:
        """`first` plus the messages already waiting, up to ``batch_items``: group commit without waiting.

        A lone item is stored at once (no added latency); under load the items that arrived during the last
        commit share the next one.
        """
        raws = [first]
        while len(raws) < self._batch_items:
            try:
                raws.append(self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        return raws

    def _handle(self, message: list[bytes], peer: str) -> None:
        self._handle_batch([(message, peer)])

    def _decode(self, message: list[bytes], peer: str) -> tuple[bytes, str, ReviewItem, bytes] | None:
        """(identity, peer, item, jpeg) of a well-formed item; None after answering ``err`` to anything else."""
        identity, frames = message[0], message[1:]
        self._count("received")
        try:
            item, jpeg = decode_item(frames, self._limits.max_pixels, self._limits.max_file_bytes)
        except WireError as exc:
            self._count("malformed")
            frame_id = frame_id_of(frames)
            log.warning("ingest: rejected message from peer %s (frame %r): %s", peer, frame_id, exc)
            self._reply(identity, [KIND_ERR, frame_id.encode(), str(exc).encode()])
            return None
        except Exception:  # decode must never kill the loop, whatever the bytes
            self._count("malformed")
            log.exception("ingest: cannot decode message from peer %s", peer)
            self._reply(identity, [KIND_ERR, frame_id_of(frames).encode(), b"undecodable message"])
            return None
        return identity, peer, item, jpeg

    def _handle_batch(self, messages: list[tuple[list[bytes], str]]) -> None:
        """Decode, store in one transaction where the sink can (``add_items``), then ack each stored item."""
        self._last_message = time.monotonic()
        summaries = [(m, peer) for m, peer in messages if len(m) > 1 and m[1] == KIND_SUMMARY]
        if summaries:  # a handful per line and minute: stored one by one, apart from the items' batch
            for message, peer in summaries:
                self._handle_summary(message, peer)
            messages = [(m, peer) for m, peer in messages if not (len(m) > 1 and m[1] == KIND_SUMMARY)]
        good = [d for d in (self._decode(m, peer) for m, peer in messages) if d is not None]
        add_items = getattr(self._store, "add_items", None)
        if len(good) > 1 and add_items is not None:
            try:
                with self.store_lock:
                    results: list[bool] = add_items([(item, jpeg) for _, _, item, jpeg in good])
            except Exception as exc:  # the batch is not committed: store item by item, so one bad item costs one
                self._batch_warnings.warning(f"batch:{type(exc).__name__}", "ingest: batch of %d items not stored "
                                             "(%s: %s); storing them one by one", len(good), type(exc).__name__, exc)
            else:
                for (identity, _, item, _), new in zip(good, results, strict=True):
                    self._stored(identity, item, new)
                return
        for identity, peer, item, jpeg in good:
            try:
                with self.store_lock:
                    new = self._store.add_item(item, jpeg)
            except Exception as exc:  # disk full, DB locked, ...: no ack, the edge keeps the item and retries
                self._count("errors")
                # one line per cause and 10 s (with how many more): a full disk must not fill the log as well
                self._store_errors.error(
                    f"item:{type(exc).__name__}:{getattr(exc, 'errno', '')}",
                    "ingest: cannot store frame %s from peer %s (line %s): %s: %s; not acked, the edge will retry",
                    item.frame_id, peer, item.line_id, type(exc).__name__, exc)
                continue
            self._stored(identity, item, new)

    def _handle_summary(self, message: list[bytes], peer: str) -> None:
        """A per-minute decision summary (``edge.transport.summary``): store once, ack after the commit."""
        identity, frames = message[0], message[1:]
        self._count("received")
        try:
            summary: DecisionSummary = decode_summary(frames)
        except WireError as exc:
            self._count("malformed")
            summary_id = summary_id_of(frames)
            log.warning("ingest: rejected summary from peer %s (%r): %s", peer, summary_id, exc)
            self._reply(identity, [KIND_ERR, summary_id.encode(), str(exc).encode()])
            return
        add_summary = getattr(self._store, "add_summary", None)
        if add_summary is None:  # a sink that keeps items only (tests, benchmarks): refuse, the edge keeps it
            self._count("malformed")
            self._reply(identity, [KIND_ERR, summary.summary_id.encode(), b"this station does not store summaries"])
            return
        try:
            with self.store_lock:
                new = add_summary(summary)
        except Exception as exc:  # as for items: no ack, the edge resends it
            self._count("errors")
            self._store_errors.error(f"summary:{type(exc).__name__}", "ingest: cannot store summary %s from peer %s: "
                                     "%s: %s; not acked, the edge will retry", summary.summary_id, peer,
                                     type(exc).__name__, exc)
            return
        with self._lock:
            self._summary_counters["stored" if new else "duplicates"] += 1
        self._reply(identity, [KIND_ACK, summary.summary_id.encode()])

    def _stored(self, identity: bytes, item: ReviewItem, new: bool) -> None:
        """Count and ack an item whose transaction has committed (ack-after-commit)."""
        self._count("stored" if new else "duplicates")
        self._writes_since_checkpoint += new
        self._reply(identity, [KIND_ACK, item.frame_id.encode()])

    def _reply(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self._socket.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._count("errors")
            log.error("ingest: cannot reply %r to peer %s: %s", frames[0], identity.hex(), exc)


def sqlite_wal_checkpoint(engine: Any, busy_timeout_ms: int = 200) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` on a SQLite engine; True when it completed (other databases: True).

    Runs on a raw autocommit connection (a checkpoint cannot run inside a transaction) with a short busy timeout,
    restored afterwards, so a long console read makes it give up rather than hold the ingest loop.
    """
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            previous = cur.execute("PRAGMA busy_timeout").fetchone()[0]
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            try:
                busy, _log, _done = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                cur.execute(f"PRAGMA busy_timeout={int(previous)}")
        finally:
            cur.close()
    finally:
        raw.close()
    return busy == 0


def _peer_name(frame: zmq.Frame, identity: bytes) -> str:
    """``address`` (plus ``key=…`` under CURVE) of the sender of a message, for log lines; routing id as a fallback.

    ZeroMQ keeps both as message properties (Peer-Address from the TCP connection, User-Id from the ZAP reply).
    """
    parts: list[str] = []
    for prop, fmt in (("Peer-Address", "{}"), ("User-Id", "key={}")):
        try:
            value = frame.get(prop)
        except zmq.ZMQError:  # not a TCP peer (inproc) or no ZAP: the property does not exist
            continue
        if value:
            parts.append(fmt.format(value))
    parts.append(f"id={identity.hex()}")
    return " ".join(parts)
