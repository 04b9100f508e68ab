"""`lineside demo` end to end, in its own process: calibrates (first run), streams new parts, routes, stores — the
line and the station never load torch — ends its start-up with the console's address and login, and prints a
`users add` line that reaches its database."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge.demo import FreshParts, turned
from edge.tools.net import free_port
from tests.conftest import REPO

SCRIPT = """
import json, sys
from edge.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps({"torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules)}), flush=True)
"""


def _demo(workdir: Path, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, "demo", "--seconds", str(seconds), "--workdir", str(workdir), "--port",
         str(free_port()), "--ingest-port", str(free_port()), "--fps", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, timeout=400,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_demo_streams_new_parts_to_the_station_and_ends_its_start_with_the_login(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    first = _demo(workdir, 1)  # the first run fits the demo profile (fitting may use torch)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "calibrating the demo line profile" in first.stdout
    result = _demo(workdir, 25)  # every later run: the line and the station only
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode == 0, result.stdout[-3000:]
    assert json.loads(lines[-1])["torch_loaded"] is False
    summary = re.fullmatch(r"demo: (\d+) frames in .* routed to review (\d+), auto-decided (\d+), in the station "
                           r"(\d+)", lines[-2])
    assert summary, lines[-2]
    frames, routed, auto, stored = map(int, summary.groups())
    assert frames > 0 and routed > 0 and auto > 0 and stored >= routed  # the first run's items are there too
    # what a person reads last before the line runs: the console's address and login, nothing after it
    assert re.fullmatch(r"console: http://127\.0\.0\.1:\d+ {3}login: demo / \S+", lines[-3]), lines[-3]
    assert not any("alembic" in line or "INFO" in line for line in lines), lines
    assert (workdir / "demo.log").read_text().count("INFO") > 5  # the log went to the file instead
    # the printed command adds a console user to the demo's own database
    add = next(line for line in lines if "users add NAME" in line).split(": ", 1)[1]
    argv = shlex.split(add.replace("NAME", "ana").replace("--role reviewer", "--role reviewer --password-stdin"))
    assert argv[-2:] == ["-c", str((workdir / "config.yaml").resolve())]
    added = subprocess.run([sys.executable, "-m", "edge.cli", *argv[argv.index("users"):]], input="a long password\n",
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert added.returncode == 0, added.stderr
    from edge.station.store import Store
    from edge.station.users import list_users

    store = Store(f"sqlite:///{workdir / 'station.db'}", workdir / "images")
    try:
        assert {u.username for u in list_users(store)} == {"demo", "ana"}
        images = [(workdir / "images" / i.image_path).read_bytes() for i in store.queue.list_items(None, 1000)]
        assert len(set(images)) == len(images)  # every review item is a part of its own, across both runs
    finally:
        store.close()


def test_every_round_of_the_looping_demo_folder_is_new_parts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sources = []
    for i in range(3):
        path = tmp_path / f"src{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        sources.append(path)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, path in enumerate(sources):
        (folder / f"{i:05d}.jpg").symlink_to(path)
    done = [0]
    stop = threading.Event()
    parts = FreshParts(folder, sources, lambda: done[0], stop)
    assert parts.first_round == 1
    parts.start()
    seen = {(folder / f"{i:05d}.jpg").read_bytes() for i in range(3)}
    try:
        for round_ in range(1, 4):
            done[0] = 3 * round_  # the daemon inspected the whole round
            deadline = time.monotonic() + 10
            while parts.renewed < done[0] and time.monotonic() < deadline:
                stop.wait(0.05)
            new = [(folder / f"{i:05d}.jpg").read_bytes() for i in range(3)]
            assert not seen & set(new), round_
            seen |= set(new)
    finally:
        stop.set()
        parts.join(5)
    parts.save()
    again = FreshParts(folder, sources, lambda: 0, stop)  # a restarted demo renews with rounds of its own
    assert again.first_round == 4
    image = cv2.imread(str(sources[0]))
    looks = {turned(image, k).tobytes() for k in range(12)}
    assert len(looks) == 12


def test_the_parts_inspected_just_before_the_demo_stops_are_renewed_for_its_next_run(tmp_path: Path) -> None:
    """A restarted demo reads its folder from the first file again: a part inspected after the renewer's last
    look must not be read, and routed, a second time."""
    sources = []
    for i in range(3):
        path = tmp_path / f"source{i}.png"
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8))
        sources.append(path)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, path in enumerate(sources):
        (folder / f"{i:05d}.jpg").write_bytes(path.read_bytes())
    before = [(folder / f"{i:05d}.jpg").read_bytes() for i in range(3)]
    done = [0]
    stop = threading.Event()
    parts = FreshParts(folder, sources, lambda: done[0], stop)
    parts.start()
    done[0] = 2  # two parts inspected, and the demo stops before the renewer looks again
    stop.set()
    parts.join(5)
    after = [(folder / f"{i:05d}.jpg").read_bytes() for i in range(3)]
    assert parts.renewed == 2 and after[0] != before[0] and after[1] != before[1] and after[2] == before[2]
