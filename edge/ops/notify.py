"""systemd's notify protocol without a dependency: one AF_UNIX datagram per message to $NOTIFY_SOCKET.

``READY=1`` once the service does its job, ``WATCHDOG=1`` at least every ``WatchdogSec`` / 2 while it really does,
``STOPPING=1`` when it begins to shut down, ``STATUS=...`` a line for ``systemctl status``. Without NOTIFY_SOCKET
(not started by systemd, or ``Type=simple``) every call is a no-op. A name starting with '@' is Linux's abstract
namespace. Errors are logged once and counted, never raised: systemd being away must not stop the line.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, address: str | None = None, watchdog_usec: str | None = None) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        usec = os.environ.get("WATCHDOG_USEC") if watchdog_usec is None else watchdog_usec
        try:
            self.watchdog_s: float | None = int(usec) / 1e6 if usec else None
        except ValueError:
            self.watchdog_s = None
        self.counters = {"sent": 0, "errors": 0}
        self.ready_sent = False
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def ping_interval(self, default: float = 5.0) -> float:
        """How often to send WATCHDOG=1: half of systemd's WatchdogSec (or `default` when it has none)."""
        return self.watchdog_s / 2 if self.watchdog_s else default

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            with self._lock:
                self.counters["errors"] += 1
                warned, self._warned = self._warned, True
            if not warned:
                log.warning("systemd notify socket %s: %s (further failures are only counted)", self.address, exc)
            return False
        with self._lock:
            self.counters["sent"] += 1
        return True

    def ready(self, status: str = "") -> None:
        if not self.ready_sent:
            self.ready_sent = True
            self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
