"""FaultProxy: a TCP proxy between an edge and the station that cuts, slows, duplicates and reorders.

It forwards loopback TCP and can, while traffic flows:
- ``cut()``: close every connection and refuse new ones (a station box that went away, a pulled cable after the
  kernel gave up), until ``restore()``;
- delay every byte by ``latency_s`` and cap the throughput at ``bytes_per_s`` (a slow link / busy station: the
  edge sees back-pressure, acks arrive late);
- duplicate (``duplicate_p``) or reorder (``reorder_p``) whole ZeroMQ messages in both directions. Bytes cannot
  be duplicated blindly inside a TCP stream without breaking it, so the proxy reads ZMTP 3 framing (64-byte
  greeting, then frames: flags byte, 1- or 8-byte size, body; a message is the frames up to one without MORE)
  and replays or swaps complete messages. Plaintext links only: under CURVE every message carries a nonce and a
  replayed one is refused by design.

One thread, non-blocking sockets and a selector; a connection whose output is backed up past ``MAX_BUFFERED``
stops being read, so back-pressure reaches the sender as it would through a real slow link.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

GREETING_BYTES = 64  # ZMTP 3.x: signature 10, version 2, mechanism 20, as-server 1, filler 31
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04
MAX_BUFFERED = 1 << 20
HOLD_S = 0.02  # a message held back for reordering goes out after this long if nothing overtakes it


class ZmtpSplitter:
    """Cuts a ZMTP 3 byte stream into units: greeting bytes, whole commands, whole messages."""

    def __init__(self) -> None:
        self._greeting_left = GREETING_BYTES
        self._buf = bytearray()
        self._message = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """(bytes, is_message) units complete after `data`; partial frames wait for the next call."""
        out: list[tuple[bytes, bool]] = []
        if self._greeting_left:
            take = min(len(data), self._greeting_left)
            out.append((data[:take], False))
            self._greeting_left -= take
            data = data[take:]
        self._buf += data
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 2:
            flags = buf[pos]
            if flags & FLAG_LONG:
                if len(buf) - pos < 9:
                    break
                size, head = int.from_bytes(buf[pos + 1:pos + 9], "big"), 9
            else:
                size, head = buf[pos + 1], 2
            end = pos + head + size
            if end > len(buf):
                break
            if flags & FLAG_COMMAND:
                out.append((bytes(buf[pos:end]), False))
            else:
                self._message += buf[pos:end]
                if not flags & FLAG_MORE:
                    out.append((bytes(self._message), True))
                    self._message = bytearray()
            pos = end
        del buf[:pos]
        return out


class _Half:
    """One direction of one proxied connection."""

    def __init__(self, src: socket.socket, dst: socket.socket, name: str) -> None:
        self.src, self.dst, self.name = src, dst, name
        self.splitter = ZmtpSplitter()
        self.delayed: deque[tuple[float, bytes]] = deque()
        self.delayed_bytes = 0
        self.out = bytearray()
        self.held: bytes | None = None
        self.held_at = 0.0
        self.tokens = 0.0
        self.refilled = time.monotonic()
        self.reading = True

    def buffered(self) -> int:
        return self.delayed_bytes + len(self.out) + (len(self.held) if self.held else 0)


class FaultProxy(threading.Thread):
    """Forwards ``127.0.0.1:port`` to ``target``; faults are switched on and off from any thread."""

    def __init__(self, target: tuple[str, int], *, listen_port: int = 0, seed: int = 0) -> None:
        super().__init__(name="FaultProxy", daemon=True)
        self.target = target
        self.latency_s = 0.0
        self.bytes_per_s: float | None = None
        self.duplicate_p = 0.0
        self.reorder_p = 0.0
        self.counters = {"connections": 0, "cuts": 0, "duplicated": 0, "reordered": 0,
                         "bytes": 0, "connect_errors": 0}
        self._rng = random.Random(seed)
        self._sel = selectors.DefaultSelector()
        self._halves: dict[socket.socket, _Half] = {}  # keyed by the half's source socket
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self.port = self._listen(listen_port)

    # -- control (any thread) --------------------------------------------------------------------------------
    def cut(self) -> None:
        """Close every connection and refuse new ones until ``restore``."""
        self._call(self._do_cut)

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        self._call(lambda: self._listen(self.port))

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)

    def _call(self, fn: Callable[[], object]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()
        self._commands.put(run)
        if not done.wait(5):
            raise RuntimeError("fault proxy did not answer within 5 s")

    # -- the loop (proxy thread) -----------------------------------------------------------------------------
    def _listen(self, port: int) -> int:
        if self._listener is not None:
            return port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        sock.setblocking(False)
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._listener = sock
        return int(sock.getsockname()[1])

    def _do_cut(self) -> None:
        self.counters["cuts"] += 1
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for sock in list(self._halves):
            self._close_link(sock)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            self.counters["connect_errors"] += 1
            client.close()  # the station itself is down: the edge sees a closed connection, as it would
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._halves[client] = _Half(client, server, "edge→station")
        self._halves[server] = _Half(server, client, "station→edge")
        for s in (client, server):
            self._sel.register(s, selectors.EVENT_READ, "peer")
        self.counters["connections"] += 1

    def _close_link(self, sock: socket.socket) -> None:
        half = self._halves.pop(sock, None)
        if half is None:
            return
        other = self._halves.pop(half.dst, None)
        for s, h in ((sock, half), (half.dst, other)):
            if h is not None and h.reading:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
            with contextlib.suppress(OSError):
                s.close()

    def _read(self, sock: socket.socket, now: float) -> None:
        half = self._halves.get(sock)
        if half is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_link(sock)
            return
        self.counters["bytes"] += len(data)
        for unit in self._mangle(half, half.splitter.feed(data), now):
            half.delayed.append((now + self.latency_s, unit))
            half.delayed_bytes += len(unit)

    def _mangle(self, half: _Half, units: list[tuple[bytes, bool]], now: float) -> list[bytes]:
        out: list[bytes] = []
        for data, is_message in units:
            if not is_message:
                out.append(data)
                continue
            if half.held is None and self.reorder_p and self._rng.random() < self.reorder_p:
                half.held, half.held_at = data, now  # goes out after the next message: the two swap places
                continue
            out.append(data)
            if self.duplicate_p and self._rng.random() < self.duplicate_p:
                out.append(data)
                self.counters["duplicated"] += 1
            if half.held is not None:
                out.append(half.held)
                half.held = None
                self.counters["reordered"] += 1
        return out

    def _pump(self, half: _Half, now: float) -> bool:
        """Move due bytes to the socket; False when the connection broke."""
        if half.held is not None and now - half.held_at > HOLD_S:  # nothing overtook it: let it go
            half.delayed.append((now + self.latency_s, half.held))
            half.delayed_bytes += len(half.held)
            half.held = None
        if self.bytes_per_s:
            half.tokens = min(half.tokens + (now - half.refilled) * self.bytes_per_s, max(self.bytes_per_s / 10,
                                                                                         65536.0))
        half.refilled = now
        while half.delayed and half.delayed[0][0] <= now:
            due, data = half.delayed[0]
            n = len(data)
            if self.bytes_per_s:
                n = min(n, int(half.tokens))
                if n <= 0:
                    break
                half.tokens -= n
            half.out += data[:n]
            half.delayed_bytes -= n
            if n < len(data):
                half.delayed[0] = (due, data[n:])
                break
            half.delayed.popleft()
        if half.out:
            try:
                sent = half.dst.send(half.out[:262144])
            except BlockingIOError:
                sent = 0
            except OSError:
                return False
            del half.out[:sent]
        return True

    def _update_reading(self, half: _Half) -> None:
        want = half.buffered() < MAX_BUFFERED
        if want == half.reading:
            return
        if want:
            self._sel.register(half.src, selectors.EVENT_READ, "peer")
        else:
            self._sel.unregister(half.src)
        half.reading = want

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                while True:
                    try:
                        self._commands.get_nowait()()
                    except queue.Empty:
                        break
                busy = any(h.out or h.delayed or h.held for h in self._halves.values())
                for key, _ in self._sel.select(0.002 if busy else 0.02):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(sock, time.monotonic())
                now = time.monotonic()
                for sock, half in list(self._halves.items()):
                    if sock not in self._halves:
                        continue
                    if not self._pump(half, now):
                        self._close_link(sock)
                        continue
                    self._update_reading(half)
        except Exception:
            log.exception("fault proxy died")
            raise
        finally:
            for sock in list(self._halves):
                self._close_link(sock)
            if self._listener is not None:
                self._listener.close()
            self._sel.close()
