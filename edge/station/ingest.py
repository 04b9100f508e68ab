"""Ingest: the ZeroMQ ROUTER that receives review items from the edges and stores each exactly once.

Protocol (see ``edge.transport.schema``): an edge DEALER sends ``[b"item", header_json, jpeg]``; this server
answers ``[b"ack", frame_id]`` only after the item is committed (a duplicate is acked too: it is already
stored), or ``[b"err", frame_id_or_empty, reason]`` for a message that can never be accepted. When storing
fails for a reason that may pass (disk full, database locked too long) it answers nothing: the edge keeps the
item and retries. Every outcome has a counter; no input stops the loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import zmq

from edge.transport.schema import KIND_ACK, KIND_ERR, ReviewItem, WireError, decode_item, frame_id_of

log = logging.getLogger(__name__)

COUNTER_NAMES = ("received", "stored", "duplicates", "malformed", "errors")


class ItemSink(Protocol):
    def add_item(self, item: ReviewItem, jpeg: bytes) -> bool: ...


class IngestError(RuntimeError):
    """The ingest socket could not be set up (e.g. the address is in use)."""


class IngestServer(threading.Thread):
    """Receives items on a ROUTER socket bound at construction; ``start()`` serves, ``stop()`` ends it."""

    def __init__(self, store: ItemSink, bind: str, *, poll_ms: int = 100,
                 context: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        super().__init__(name="station-ingest", daemon=True)
        self._store = store
        self._poll_ms = poll_ms
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(bind)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise IngestError(f"station ingest cannot bind {bind}: {exc}") from exc
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("ingest listening on %s", self.endpoint)

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the counters: received, stored, duplicates, malformed, errors."""
        with self._lock:
            return dict(self._counters)

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
            self._socket.close()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    if not self._socket.poll(self._poll_ms, zmq.POLLIN):
                        continue
                    message = self._socket.recv_multipart()
                except zmq.ContextTerminated:
                    log.warning("ingest: ZeroMQ context terminated, stopping")
                    return
                except zmq.ZMQError as exc:
                    self._count("errors")
                    log.error("ingest: receive failed: %s", exc)
                    self._stop_event.wait(self._poll_ms / 1000)
                    continue
                self._handle(message)
        finally:
            self._socket.close()
            log.info("ingest stopped; counters %s", self.counters)

    def _handle(self, message: list[bytes]) -> None:
        identity, frames = message[0], message[1:]
        peer = identity.hex()
        self._count("received")
        try:
            item, jpeg = decode_item(frames)
        except WireError as exc:
            self._count("malformed")
            frame_id = frame_id_of(frames)
            log.warning("ingest: rejected message from peer %s (frame %r): %s", peer, frame_id, exc)
            self._reply(identity, [KIND_ERR, frame_id.encode(), str(exc).encode()])
            return
        except Exception:  # decode must never kill the loop, whatever the bytes
            self._count("malformed")
            log.exception("ingest: cannot decode message from peer %s", peer)
            self._reply(identity, [KIND_ERR, frame_id_of(frames).encode(), b"undecodable message"])
            return
        try:
            new = self._store.add_item(item, jpeg)
        except Exception as exc:  # disk full, DB locked, ...: no ack, the edge keeps the item and retries
            self._count("errors")
            log.error("ingest: cannot store frame %s from peer %s (line %s): %s: %s; not acked, the edge "
                      "will retry", item.frame_id, peer, item.line_id, type(exc).__name__, exc)
            return
        self._count("stored" if new else "duplicates")
        self._reply(identity, [KIND_ACK, item.frame_id.encode()])

    def _reply(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self._socket.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self._count("errors")
            log.error("ingest: cannot reply %r to peer %s: %s", frames[0], identity.hex(), exc)
