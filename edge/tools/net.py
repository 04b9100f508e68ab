"""Loopback ports for the harnesses and tests that start servers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nothing listens on now (bound, read, released: another process may take it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
