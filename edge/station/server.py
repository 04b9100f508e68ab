"""The station process: store + ingest thread + console web server, started and stopped together."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from edge.config import StationConfig
from edge.ops.health import HealthServer
from edge.ops.metrics import station_registry
from edge.ops.notify import SystemdNotifier
from edge.ops.signals import SignalDispatcher
from edge.station.console import create_app
from edge.station.ingest import IngestServer, sqlite_wal_checkpoint
from edge.station.retention import MaintenanceSchedule, RetentionPolicy, StorageCollector, StoreMaintainer
from edge.station.risk_audit import AuditCollector
from edge.station.store import GroupingPolicy, Store

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 10.0


class StationError(RuntimeError):
    """The station could not start, or one of its parts died while running."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket for the console (port 0 picks a free one), IPv4 or IPv6 as the host asks."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StationError(f"console cannot resolve {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StationError(f"console cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_station(cfg: StationConfig, stop: threading.Event | None = None,
                on_ready: Callable[[str, str], None] | None = None) -> None:
    """Run the review station until ``stop`` is set (or SIGTERM/SIGINT in the main thread); then shut down.

    ``on_ready(console_url, ingest_endpoint)`` is called once the console and the ingest socket both listen.
    Raises StationError when a part cannot start or dies while running (after shutting the rest down).
    """
    stop = stop or threading.Event()
    store = Store(cfg.database_url, cfg.storage_dir,
                  GroupingPolicy(cfg.group_distance, cfg.group_max_items, cfg.group_window_s))
    ingest: IngestServer | None = None
    server: uvicorn.Server | None = None
    http_thread: threading.Thread | None = None
    signals: SignalDispatcher | None = None
    metrics: HealthServer | None = None
    maintainer: StoreMaintainer | None = None
    notifier = SystemdNotifier()  # a no-op unless systemd started us as Type=notify
    try:
        ingest = IngestServer(store.ingest, cfg.ingest_bind, curve_secret_key=cfg.curve_secret_key,
                              allowed_keys_dir=cfg.allowed_keys_dir,
                              checkpoint=(lambda: sqlite_wal_checkpoint(store.engine))
                              if cfg.wal_checkpoint_idle_s > 0 else None,
                              checkpoint_idle_s=cfg.wal_checkpoint_idle_s, image_limits=cfg.images)
        sock = _listen(cfg.http_host, cfg.http_port)
        app = create_app(store, cfg.storage_dir, ingest_counters=lambda: ingest.counters if ingest else {},
                         config=cfg)
        server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=3))
        http_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="station-http",
                                       daemon=True)
        maintainer = StoreMaintainer(
            store, RetentionPolicy(cfg.retention_min_free_bytes, cfg.retention_max_bytes),
            MaintenanceSchedule(retention_interval_s=cfg.retention_interval_s,
                                orphan_interval_s=cfg.orphan_scan_interval_s),
            lock=ingest.store_lock)
        maintainer.clean_at_start()  # before ingest: whatever a crash left is an orphan, however young
        maintainer.start()
        ingest.start()
        http_thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not http_thread.is_alive():
                raise StationError("console web server exited during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise StationError(f"console web server not up after {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

        if threading.current_thread() is threading.main_thread():
            def _on_signal(signum: signal.Signals) -> None:
                log.info("station: %s received, stopping", signum.name)
                stop.set()
            signals = SignalDispatcher({signal.SIGTERM: _on_signal, signal.SIGINT: _on_signal}).start()

        if cfg.metrics_port is not None:
            running = ingest
            registry = station_registry(lambda: running.counters)
            registry.register(AuditCollector(app.state.risk_audit))  # lineside_audit_* gauges per line
            registry.register(StorageCollector(maintainer))  # orphans removed, retention deletions, blocked
            try:
                metrics = HealthServer(cfg.metrics_host, cfg.metrics_port, registry, name="station-metrics").start()
            except OSError as exc:
                raise StationError(f"station metrics cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: "
                                   f"{exc.strerror or exc}") from exc
            log.info("station metrics on %s/metrics", metrics.url)
        console_url = _url(sock)
        log.info("station ready: console %s, ingest %s, database %s, images %s",
                 console_url, ingest.endpoint, cfg.database_url, cfg.storage_dir)
        notifier.ready(f"console {console_url}, ingest {ingest.endpoint}")
        if on_ready is not None:
            on_ready(console_url, ingest.endpoint)
        while not stop.wait(min(0.5, notifier.ping_interval())):
            if not ingest.is_alive():
                raise StationError("station ingest thread died")
            if not http_thread.is_alive():
                raise StationError("station console web server died")
            notifier.watchdog()  # only while both parts are alive: a dead part stops the pings
    finally:
        notifier.stopping("station stopping")
        if metrics is not None:
            metrics.stop()
        if signals is not None:
            signals.close()
        if maintainer is not None:
            maintainer.stop(SHUTDOWN_TIMEOUT_S)
        if ingest is not None:
            ingest.stop(SHUTDOWN_TIMEOUT_S)
        if server is not None and http_thread is not None:
            app.state.console.closing.set()  # live streams end now rather than at the graceful-shutdown timeout
            server.should_exit = True
            http_thread.join(SHUTDOWN_TIMEOUT_S)
            if http_thread.is_alive():
                log.error("station: console web server did not stop within %.0f s", SHUTDOWN_TIMEOUT_S)
        store.close()
        log.info("station stopped")
