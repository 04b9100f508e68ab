"""A small HTTP server thread for machines, not people: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

Loopback by default (the bind host is configured); no session, no TLS — the console has those. ``/healthz`` is 200
while the process's main loop turns, ``/readyz`` 200 once it does its job (both 503 otherwise, with a JSON reason);
``/metrics`` is the registry in Prometheus text format.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 checks: dict[str, Check] | None = None, name: str = "health") -> None:
        self.registry = registry
        self.checks = checks or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                    elif path in outer.checks:
                        ok, body = outer.checks[path]()
                        self._send(200 if ok else 503, json.dumps({"status": "ok" if ok else "fail", **body}).encode(),
                                   "application/json")
                    else:
                        self._send(404, b'{"status": "not found"}', "application/json")
                except Exception as exc:  # a broken check is an unhealthy answer, never a dead server
                    log.exception("%s endpoint %s failed", name, path)
                    self._send(500, json.dumps({"status": "error", "detail": str(exc)}).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: scraped every few s
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                       name=f"{name}-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.httpd.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
