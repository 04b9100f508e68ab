"""OutboxSender: moves items from the durable outbox to the station over ZeroMQ, one ack per frame id.

Lazy Pirate in spirit (zguide lpclient.py): send, wait for acks with a timeout; when an ack is overdue the station is
taken as unreachable, the DEALER is closed with LINGER 0 (its queue is thrown away — the items are still on disk) and
a fresh socket is opened after a backoff. The station being away is not an error for the daemon: it is logged once
when the state changes, shown in the status, and the outbox holds the frames until it is back.

CURVE: with ``curve_secret_key`` and ``station_public_key`` set, the DEALER is a CURVE client (the keys are read in
the constructor, so a missing file fails at start-up). A station that refuses this edge's key looks like an
unreachable one — the items wait — but the state says "refused" and why (from the socket monitor), so the fix (copy
this edge's public key into the station's allowed_keys_dir) is in the log line, not a guess.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import zmq

from edge.config import TransportConfig
from edge.transport.handshake import HandshakeWatch
from edge.transport.keys import KeyPair, load_public, load_secret, make_curve_client
from edge.transport.outbox import Outbox
from edge.transport.schema import KIND_ACK, KIND_ERR, KIND_ITEM

log = logging.getLogger(__name__)


class OutboxSender(threading.Thread):
    def __init__(self, outbox: Outbox, cfg: TransportConfig, context: zmq.Context | None = None) -> None:
        super().__init__(name="OutboxSender", daemon=True)
        self.outbox = outbox
        self.cfg = cfg
        self._ctx = context or zmq.Context.instance()
        self._stopping = threading.Event()
        # frame_id -> (outbox names, sent at). Usually one name; two when the same frame was put twice (a daemon
        # killed between its outbox put and its own bookkeeping puts it again): one ack settles both files.
        self._in_flight: dict[str, tuple[list[str], float]] = {}
        self.state = "connecting"
        self.state_detail = ""
        self.counters = {"sent": 0, "acks": 0, "timeouts": 0, "reconnects": 0, "errors": 0, "unknown_acks": 0,
                         "handshake_failures": 0, "twins": 0, "bad_replies": 0}
        self._lock = threading.Lock()
        self._curve: tuple[KeyPair, bytes] | None = None
        if cfg.curve_secret_key is not None and cfg.station_public_key is not None:
            # KeyFileError here, at start-up, names the file
            self._curve = (load_secret(cfg.curve_secret_key), load_public(cfg.station_public_key))
        self._watch: HandshakeWatch | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> dict[str, object]:
        with self._lock:
            return {"state": self.state, "detail": self.state_detail, "in_flight": len(self._in_flight),
                    **self.counters}

    def _set_state(self, state: str, detail: str = "") -> None:
        """Log only when the state changes (not on every retry), so an outage is one line in the log."""
        if state == "unreachable" and self.state == "refused":
            return  # the failed handshake is the better explanation; keep it until an ack proves otherwise
        if state != self.state:
            level = logging.WARNING if state in ("unreachable", "refused") else logging.INFO
            log.log(level, "station %s: %s%s", self.cfg.station, state, f" ({detail})" if detail else "")
        self.state = state
        self.state_detail = detail

    def _open(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only to completed connections, so a dead station blocks sends
        sock.setsockopt(zmq.SNDHWM, self.cfg.max_in_flight * 2)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.cfg.retry_max_s * 1000))
        if self._curve is not None:
            make_curve_client(sock, *self._curve)
        self._watch = HandshakeWatch(sock)
        sock.connect(self.cfg.station)
        return sock

    def _close(self, sock: zmq.Socket) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        sock.close(linger=0)

    def _check_handshakes(self) -> None:
        """Say why the station does not answer when the handshake itself failed (wrong or unknown key)."""
        if self._watch is None:
            return
        for failure in self._watch.read():
            with self._lock:
                self.counters["handshake_failures"] += 1
            if failure.kind == "auth":
                public = self._curve[0].public.decode() if self._curve else "(none: plaintext)"
                self._set_state("refused", f"station refused this edge's CURVE key {public}; add its .key file "
                                "to the station's allowed_keys_dir")
            else:
                self._set_state("refused", f"handshake with the station failed: {failure.detail}; both sides "
                                "must have CURVE on (with matching keys) or both off")

    def run(self) -> None:
        backoff = self.cfg.retry_initial_s
        sock = self._open()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                try:
                    self.outbox.flush_if_due()  # fsync "batch": items become durable within ~0.2 s
                    self._check_handshakes()
                    self._fill(sock)
                    events = dict(poller.poll(100))
                    if sock in events:
                        self._drain_replies(sock)
                        backoff = self.cfg.retry_initial_s
                    if self._overdue():
                        # Lazy Pirate: the station is away or lost our messages; start over with a fresh socket.
                        with self._lock:
                            self.counters["timeouts"] += 1
                            self.counters["reconnects"] += 1
                            names = [name for names, _ in self._in_flight.values() for name in names]
                            self._in_flight.clear()
                        self.outbox.requeue(names)
                        self._set_state("unreachable", f"no ack within {self.cfg.ack_timeout_s:g} s; "
                                        "items are held in the outbox")
                        poller.unregister(sock)
                        self._close(sock)
                        if self._stopping.wait(backoff * (1 + 0.1 * random.random())):
                            break
                        backoff = min(backoff * 2, self.cfg.retry_max_s)
                        sock = self._open()
                        poller.register(sock, zmq.POLLIN)
                    elif not self._in_flight and self.outbox.waiting() == 0:
                        self.outbox.wait_for_work(0.2)
                except Exception:  # the sender must outlive any surprise; the items stay on disk
                    with self._lock:
                        self.counters["errors"] += 1
                    log.exception("outbox sender: unexpected error; retrying")
                    self._stopping.wait(1.0)
        finally:
            self._close(sock)
            self.outbox.flush()

    def _fill(self, sock: zmq.Socket) -> None:
        room = self.cfg.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        names = self.outbox.take(room)
        names += self.outbox.take_summaries(room - len(names))  # a few per minute, behind the items
        for i, name in enumerate(names):
            pending = self.outbox.load(name)
            if pending is None:
                continue
            with self._lock:
                twin = self._in_flight.get(pending.frame_id)
                if twin is not None:  # the same frame is already on its way: its ack will settle this copy too
                    twin[0].append(name)
                    self.counters["twins"] += 1
                    continue
            try:
                frames = ([KIND_ITEM, pending.header, pending.jpeg] if pending.kind == KIND_ITEM
                          else [pending.kind, pending.header])  # a decision summary: no image
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                # no connected station: put this and the rest back, try again after the next poll
                self.outbox.requeue(names[i:])
                if not self._in_flight:
                    self._set_state("unreachable", "not connected; items are held in the outbox")
                    self._stopping.wait(0.1)
                return
            with self._lock:
                self._in_flight[pending.frame_id] = ([name], time.monotonic())
                self.counters["sent"] += 1

    def _drain_replies(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = frames[0] if frames else b""
            frame_id = frames[1].decode(errors="replace") if len(frames) > 1 else ""
            with self._lock:
                entry = self._in_flight.pop(frame_id, None)
            if entry is None:
                with self._lock:
                    self.counters["unknown_acks"] += 1  # a late ack after a resend; the file is already gone
                continue
            names, _ = entry
            if kind == KIND_ACK:
                for name in names:
                    self.outbox.ack(name)
                with self._lock:
                    self.counters["acks"] += 1
                self._set_state("connected")
            elif kind == KIND_ERR:
                reason = frames[2].decode(errors="replace") if len(frames) > 2 else "no reason given"
                for name in names:
                    self.outbox.reject(name, reason)
                self._set_state("connected")
            else:  # not ours to guess: the frame stays in flight and is resent after the ack timeout
                with self._lock:
                    self._in_flight[frame_id] = entry
                    self.counters["bad_replies"] += 1
                log.warning("station %s: reply of unknown kind %r for frame %s ignored", self.cfg.station,
                            kind[:20], frame_id)

    def _overdue(self) -> bool:
        if not self._in_flight:
            return False
        now = time.monotonic()
        with self._lock:
            oldest = min(sent for _, sent in self._in_flight.values())
        return now - oldest > self.cfg.ack_timeout_s

    def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every item and summary acked); True if it emptied in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.waiting() == 0:
                return True
            time.sleep(0.05)
        return self.outbox.waiting() == 0
