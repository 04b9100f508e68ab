"""The ops building blocks on their own: notify datagrams, the inference watchdog, JSON logs, the health server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from edge.ops.health import HealthServer
from edge.ops.logs import JsonFormatter, frame_context
from edge.ops.notify import SystemdNotifier
from edge.ops.watchdog import InferenceStuck, InferenceWorker, WorkerGaveUp


def _recv_all(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


def test_notify_sends_datagrams_to_the_socket_systemd_names(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        n = SystemdNotifier(address=path, watchdog_usec="4000000")
        assert n.enabled and n.ping_interval() == 2.0
        n.ready("up")
        n.ready("again")  # READY is sent once
        n.watchdog()
        n.stopping("bye")
        assert _recv_all(systemd) == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1\nSTATUS=bye"]
    assert n.counters == {"sent": 3, "errors": 0}


def test_notify_abstract_socket_and_absent_systemd() -> None:
    name = f"@lineside-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name[1:])
        SystemdNotifier(address=name).watchdog()
        assert _recv_all(systemd) == ["WATCHDOG=1"]
    off = SystemdNotifier(address="", watchdog_usec="")
    assert not off.enabled and off.notify("READY=1") is False and off.ping_interval() == 5.0


def test_notify_to_a_gone_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = SystemdNotifier(address=str(tmp_path / "nobody"))
    n.watchdog()
    n.watchdog()
    assert n.counters == {"sent": 0, "errors": 2}


def test_stuck_worker_is_replaced_and_the_next_frame_goes_through() -> None:
    release = threading.Event()
    calls: list[int] = []

    def call(x: int) -> int:
        calls.append(x)
        if x == 1:
            release.wait(10)  # the stuck model
        return x * 10

    made: list[int] = []

    def factory():  # noqa: ANN202
        made.append(1)
        return call

    worker: InferenceWorker[int] = InferenceWorker(call, stuck_s=0.3, max_restarts=2, window_s=60,
                                                   backoff_initial_s=0.05, factory=factory)
    assert worker.inspect(0) == 0
    started = time.monotonic()
    with pytest.raises(InferenceStuck):
        worker.inspect(1)
    assert 0.3 <= time.monotonic() - started < 2
    assert worker.restarts == 1 and made == [1]
    assert worker.inspect(2) == 20  # the new thread answers while the old one is still blocked
    release.set()
    worker.close()


def test_worker_gives_up_past_the_restart_limit_with_growing_backoff() -> None:
    block = threading.Event()
    worker: InferenceWorker[None] = InferenceWorker(lambda _x: block.wait(30) and None, stuck_s=0.1,
                                                    max_restarts=2, window_s=60, backoff_initial_s=0.1)
    times = []
    for _ in range(2):
        t = time.monotonic()
        with pytest.raises(InferenceStuck):
            worker.inspect(None)
        times.append(time.monotonic() - t)
    assert times[1] > times[0] + 0.05  # 0.1 s, then 0.2 s back-off
    with pytest.raises(WorkerGaveUp):
        worker.inspect(None)
    assert worker.restarts == 2 and worker.stuck == 3
    block.set()


def test_json_log_lines_carry_camera_frame_and_stage() -> None:
    record = logging.LogRecord("edge.daemon", logging.ERROR, __file__, 1, "frame %s failed", ("f1",), None)
    for k, v in frame_context("line-1", "cam0", "line-1:cam0:b:7", "inspect").items():
        setattr(record, k, v)
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "frame f1 failed" and line["level"] == "error"
    assert (line["line"], line["camera"], line["frame_id"], line["stage"]) == ("line-1", "cam0", "line-1:cam0:b:7",
                                                                               "inspect")


def test_health_server_answers_checks_and_metrics() -> None:
    registry = CollectorRegistry()
    Counter("things", "things seen", registry=registry).inc(3)
    state = {"ready": False}
    server = HealthServer("127.0.0.1", 0, registry, {"/healthz": lambda: (True, {}),
                                                     "/readyz": lambda: (state["ready"], {"why": "warming"})}).start()
    try:
        with urllib.request.urlopen(server.url + "/healthz") as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/readyz")
        assert err.value.code == 503 and json.loads(err.value.read())["why"] == "warming"
        state["ready"] = True
        with urllib.request.urlopen(server.url + "/readyz") as r:
            assert r.status == 200
        with urllib.request.urlopen(server.url + "/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        assert families["things"].samples[0].value == 3
    finally:
        server.stop()


def test_peak_rss_is_the_programs_own_not_its_parents() -> None:
    import subprocess
    import sys

    from edge.ops.metrics import peak_rss_mb

    ballast = bytearray(400 * 2**20)  # this process holds 400 MB when it starts the child
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = ("import resource; from edge.ops.metrics import peak_rss_mb; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_rss_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    inherited, own = float(out[0]), float(out[1])
    assert inherited > 400 and own < 200, "getrusage carries the parent's peak across exec; VmHWM does not"
    assert peak_rss_mb() > 400
    del ballast
