"""Loopback ports and readiness waits for the harnesses and tests that start servers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nothing listens on now (bound, read, released: another process may take it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
