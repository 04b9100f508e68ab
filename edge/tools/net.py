"""Loopback ports and readiness waits for the harnesses and tests that start servers."""

from __future__ import annotations

import random
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
BELOW_EPHEMERAL = 12000  # how far below the kernel's range for outgoing connections the ports are drawn
_given: set[int] = set()
_draw = random.Random()  # its own: a test that seeds `random` must not make two processes draw alike


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A loopback TCP port nothing listens on now, never the same one twice in this process (bind(0), released at
    once, can give the same port to two servers of one harness: a soak's station ingest and its daemon's decisions
    PUB once got one port). Bound, read, released: another process may still take it. Drawn below the kernel's
    range for outgoing connections, so that a connection opened before the server binds — a readiness probe, a
    ZeroMQ peer — cannot take it as its own end."""
    low = _ephemeral_low()
    candidates = range(max(1024, low - BELOW_EPHEMERAL), low)
    for _ in range(100 if len(candidates) > 1000 else 0):
        port = _draw.choice(candidates)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    for _ in range(100):  # no room below the range, or none found free there: the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port
    raise OSError("no loopback port found free that this process has not given out already")


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              log_file: Path | None = None) -> None:
    """Until `url` answers 200, or TimeoutError; RuntimeError at once when `proc` (the server) exits meanwhile. The
    tail of `log_file` (the server's output) goes into either message."""
    def tail() -> str:
        return f": {log_file.read_text(errors='replace')[-2000:]}" if log_file is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s{tail()}")
