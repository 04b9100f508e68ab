"""Seeing failed ZeroMQ handshakes: who was refused and why, on either end of the link.

ZeroMQ refuses a peer inside its I/O thread; the application sees nothing unless it asks. Two sources tell us:

- the socket monitor (``HandshakeWatch``): an event for every failed handshake — ``HANDSHAKE_FAILED_AUTH`` (the ZAP
  handler said no: unknown key), ``HANDSHAKE_FAILED_PROTOCOL`` (e.g. a plaintext peer at a CURVE server: mechanism
  mismatch), ``HANDSHAKE_FAILED_NO_DETAIL`` (garbage, a port scanner). It carries no peer address, so it is what we
  count, once per refused connection attempt.
- the ZAP handler (``LoggingAuthenticator``): sees the peer's IP address and public key of every CURVE attempt, so
  it is what we log an unknown key with. It does not see plaintext peers (they fail before ZAP is asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from edge.ops.logs import RateLimitedLog

log = logging.getLogger(__name__)

FAILURE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass(frozen=True, slots=True)
class HandshakeFailure:
    kind: str  # "auth" | "protocol" | "other"
    detail: str
    endpoint: str


def _describe(event: int, value: int) -> HandshakeFailure:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return HandshakeFailure("auth", f"ZAP refused the peer (status {value})", "")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return HandshakeFailure("protocol", "security mechanism mismatch (plaintext peer at a CURVE socket, "
                                    "or the reverse)", "")
        return HandshakeFailure("protocol", f"protocol error {value:#x}", "")
    return HandshakeFailure("other", f"handshake failed (errno {value})", "")


class HandshakeWatch:
    """A monitor on one socket that reports failed handshakes; poll ``.socket`` and call ``read()``."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.socket: zmq.Socket[bytes] = sock.get_monitor_socket(FAILURE_EVENTS)
        self._owner = sock

    def read(self) -> list[HandshakeFailure]:
        """Every failure event waiting now (non-blocking)."""
        out: list[HandshakeFailure] = []
        while True:
            try:
                msg = recv_monitor_message(self.socket, flags=zmq.NOBLOCK)
            except zmq.Again:
                return out
            if msg["event"] & FAILURE_EVENTS:
                failure = _describe(int(msg["event"]), int(msg["value"]))
                endpoint = msg["endpoint"].decode(errors="replace") if msg.get("endpoint") else ""
                out.append(HandshakeFailure(failure.kind, failure.detail, endpoint))

    def close(self) -> None:
        """Stop monitoring (before the watched socket is closed)."""
        if not self._owner.closed:
            try:
                self._owner.disable_monitor()
            except zmq.ZMQError as exc:  # the owner is being torn down; the monitor goes with it
                log.debug("disable_monitor: %s", exc)
        self.socket.close(linger=0)


class LoggingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler thread, plus a warning line (IP address and public key) for every refused CURVE peer.

    It hooks two pyzmq internals that have been stable since pyzmq 14 (``handle_zap_message`` and
    ``_send_zap_reply``); if they ever change, only the log line is lost — refusing and counting do not depend
    on it.
    """

    def __init__(self, context: zmq.Context[Any]) -> None:
        super().__init__(context, log=logging.getLogger("edge.transport.zap"))
        self._peer = ("?", "?")
        self._limited = RateLimitedLog(log)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        mechanism = msg[5].decode(errors="replace") if len(msg) > 5 else "?"
        key = msg[6] if mechanism == "CURVE" and len(msg) > 6 else b""
        self._peer = (address, zmq.utils.z85.encode(key).decode() if len(key) == 32 else mechanism)
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        if status_code != b"200":
            address, key = self._peer
            self._limited.warning(f"{address}/{key}", "ingest: refused peer %s with public key %s: %s",
                                  address, key, status_text.decode(errors="replace"))
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
