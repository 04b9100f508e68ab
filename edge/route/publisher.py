"""DecisionPublisher: every decision as JSON on a local ZeroMQ PUB socket, for the line's PLC/MES bridges.

Two frames per message: the topic ``decision`` and the JSON object (frame id, verdict, class scores, anomaly score,
uncertainty, routed, regions, pack/profile versions, ``latency_ms`` from capture to publish). PUB never blocks the
line: a subscriber that cannot keep up loses messages beyond the high-water mark (ZeroMQ's rule for PUB), which is
why the durable record is the decision log and the station, not this feed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import zmq

log = logging.getLogger(__name__)
TOPIC = b"decision"


class DecisionPublisher:
    def __init__(self, endpoint: str, context: zmq.Context | None = None, hwm: int = 10_000) -> None:
        self.endpoint = endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise OSError(f"decisions PUB socket cannot bind {endpoint}: {exc}") from None
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, decision: dict[str, Any]) -> None:
        """Send one decision; raises zmq.ZMQError (the caller counts it and goes on)."""
        self._sock.send_multipart([TOPIC, json.dumps(decision, separators=(",", ":")).encode()], flags=zmq.NOBLOCK)

    def close(self) -> None:
        self._sock.close(linger=0)
