"""run_station as a process: ready callback, SIGTERM stops it cleanly, start-up errors are clear."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from console_support import login_opener, make_user  # tests/station/console_support.py

from edge.config import StationConfig
from edge.station.server import StationError, run_station
from edge.station.store import Store

CHILD = """
import json, sys
from edge.config import StationConfig
from edge.station.server import run_station
cfg = StationConfig.model_validate_json(sys.argv[1])
run_station(cfg, on_ready=lambda url, ingest: print(json.dumps([url, ingest]), flush=True))
print("clean exit", flush=True)
"""


def _cfg(tmp_path: Path, **over) -> StationConfig:
    data = dict(ingest_bind="tcp://127.0.0.1:0", http_host="127.0.0.1", http_port=0,
                database_url=f"sqlite:///{tmp_path / 'db' / 'station.db'}", storage_dir=tmp_path / "images")
    data.update(over)
    return StationConfig(**data)


def test_sigterm_stops_the_station_cleanly(tmp_path):
    cfg = _cfg(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, cfg.model_dump_json()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        url, ingest = json.loads(line)
        assert ingest.startswith("tcp://127.0.0.1:")
        with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
            assert json.load(r) == {"status": "ok"}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "clean exit" in out
    assert (tmp_path / "db" / "station.db").exists() and (tmp_path / "images").is_dir()


def test_http_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StationError, match=f"console cannot listen on 127.0.0.1:{port}"):
            run_station(_cfg(tmp_path, http_port=port), threading.Event())


def test_stop_event_ends_run_station(tmp_path):
    stop = threading.Event()
    ready: list[str] = []
    thread = threading.Thread(target=run_station, args=(_cfg(tmp_path), stop, lambda u, i: ready.extend([u, i])))
    thread.start()
    try:
        for _ in range(300):
            if ready:
                break
            thread.join(0.05)
        assert ready, "not ready"
        cfg = _cfg(tmp_path)
        store = Store(cfg.database_url, cfg.storage_dir)  # the console needs a login
        make_user(store, "ops")
        store.close()
        with login_opener(ready[0], "ops").open(ready[0] + "/api/stats", timeout=5) as r:
            assert json.load(r)["ingest"] == {"received": 0, "stored": 0, "duplicates": 0, "malformed": 0,
                                              "errors": 0, "auth_rejected": 0,
                                              "checkpoints": 0}
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
