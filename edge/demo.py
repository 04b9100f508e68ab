"""`lineside demo`: a textile line from nothing to review items in the console, on the embedded starter pack.

First run: calibrates a demo line profile from 50 good images of the textile train split. Every run: lays the
textile test split out as a folder source (links, in a fixed shuffled order so good and defective parts mix),
starts the station (ZeroMQ ingest + console) in this process and the daemon over that folder at ~10 fps.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import LineConfig, ModelConfig, SourceConfig, StationConfig, TransportConfig
from edge.datasets import textile_split
from edge.fit.refit import RoutingSpec
from edge.profile.line_profile import ProfileError
from edge.profile.versions import current_version, load_profile
from edge.progress import Progress, silent
from edge.vlm.vocabulary import load_vocabulary

log = logging.getLogger("edge.demo")
PACK_DIR = Path(__file__).resolve().parent.parent / "models" / "starter"
DEMO_GOOD_IMAGES = 50
DEMO_DEFECT_IMAGES = 50
DEMO_REVIEW_BUDGET = 0.2


def default_pack_dir() -> Path:
    env = os.environ.get("LINESIDE_PACK")
    return Path(env) if env else PACK_DIR


def lay_out_frames(directory: Path, seed: int = 0) -> int:
    """Link the textile test split into `directory` as 00000.jpg, 00001.jpg, … in a fixed shuffled order."""
    files = [p for p, _ in textile_split("test")]
    order = np.random.default_rng(seed).permutation(len(files))
    directory.mkdir(parents=True, exist_ok=True)
    for i, j in enumerate(order):
        link = directory / f"{i:05d}{files[j].suffix}"
        if not link.exists():
            link.symlink_to(files[j])
    return len(files)


def demo_configs(workdir: Path, http_port: int, fps: float,
                 ingest_port: int = 5571) -> tuple[LineConfig, StationConfig]:
    endpoint = f"tcp://127.0.0.1:{ingest_port}"
    line = LineConfig(
        id="textile-demo",
        source=SourceConfig(kind="folder", id="cam0", path=workdir / "frames", fps=fps, loop=True),
        model=ModelConfig(pack=default_pack_dir(), provider="cpu"),
        profile=workdir / "profile",
        transport=TransportConfig(station=endpoint, outbox_dir=workdir / "outbox"),
        status_file=workdir / "daemon-status.json",
        decision_log=workdir / "decisions.jsonl",
    )
    station = StationConfig(ingest_bind=endpoint, http_port=http_port,
                            database_url=f"sqlite:///{workdir / 'station.db'}", storage_dir=workdir / "images")
    return line, station


DEMO_USER = "demo"


class DemoError(RuntimeError):
    """The demo cannot start; the message says why and what to do."""


def demo_login(station_cfg: StationConfig, workdir: Path) -> tuple[str, str]:
    """The demo's console login: an admin user made on first run with a random password kept in the workdir."""
    from edge.station.store import Store
    from edge.station.users import UserError, add_user, list_users

    secret_file = workdir / "demo-login.txt"
    store = Store(station_cfg.database_url, station_cfg.storage_dir)
    try:
        if any(u.username == DEMO_USER for u in list_users(store)) and secret_file.exists():
            return DEMO_USER, secret_file.read_text().strip()
        password = secrets.token_urlsafe(9)
        try:
            add_user(store, DEMO_USER, password, role="admin")
        except UserError:  # the user exists but its password file was lost: make a new demo user name
            raise DemoError(f"demo user exists without {secret_file}; delete {workdir} to start afresh") from None
        secret_file.write_text(password + "\n")
        secret_file.chmod(0o600)
        return DEMO_USER, password
    finally:
        store.close()


def demo_calibration_images(seed: int = 0) -> tuple[list[Path], list[Path]]:
    """What a line engineer would bring to set the demo line up: 50 good parts and a few known bad ones (25 local,
    25 global defects), all from the textile train split — never from the test split the demo streams."""
    rng = np.random.default_rng(seed)
    train = textile_split("train")

    def pick(label: str, n: int) -> list[Path]:
        files = [p for p, lab in train if lab == label]
        return [files[i] for i in rng.permutation(len(files))[:n]]

    return pick("nominal", DEMO_GOOD_IMAGES), pick("local", DEMO_DEFECT_IMAGES // 2) + pick(
        "global", DEMO_DEFECT_IMAGES // 2)


def _profile_fits(profile_dir: Path, pack_version: str) -> bool:
    """A demo profile exists and was fit with this pack (a rebuilt pack needs a new calibration)."""
    if current_version(profile_dir) is None:
        return False
    try:
        load_profile(profile_dir, pack_version=pack_version)
    except ProfileError:
        return False
    return True


def run_demo(workdir: Path, seconds: float | None = None, http_port: int = 8080, fps: float = 10.0,
             progress: Progress = silent,
             ingest_port: int = 5571) -> dict[str, Any]:
    from edge.daemon import Daemon
    from edge.fit.calibrate import calibrate
    from edge.station.server import run_station
    from edge.station.store import Store
    from edge.vlm.pack import load_pack

    workdir = workdir.resolve()
    line_cfg, station_cfg = demo_configs(workdir, http_port, fps, ingest_port)
    n_frames = lay_out_frames(workdir / "frames")
    pack = load_pack(line_cfg.model.pack)
    if not _profile_fits(line_cfg.profile, pack.version):
        good, defects = demo_calibration_images()
        print(f"calibrating the demo line profile from {len(good)} good and {len(defects)} labelled defect "
              "textile images …", flush=True)
        # ~80 labelled frames cannot certify a 1 % risk bound (that takes hundreds): the demo line sends its most
        # uncertain fifth to review instead, ranked by the learned failure predictor
        calibrate(pack, load_vocabulary(), good, line_cfg.id, line_cfg.profile, defects=defects,
                  provider=line_cfg.model.provider, progress=progress,
                  routing=RoutingSpec("budget", budget=DEMO_REVIEW_BUDGET))

    user, password = demo_login(station_cfg, workdir)
    stop_station = threading.Event()
    ready = threading.Event()
    urls: dict[str, str] = {}

    def on_ready(console_url: str, ingest: str) -> None:
        urls.update(console=console_url, ingest=ingest)
        ready.set()

    station_thread = threading.Thread(target=run_station, args=(station_cfg, stop_station, on_ready),
                                      name="StationServer", daemon=True)
    station_thread.start()
    if not ready.wait(30):
        raise DemoError(f"the demo station did not start within 30 s (is port {http_port} or "
                           f"{ingest_port} in use?)")
    daemon = Daemon(line_cfg)
    print(f"console: {urls['console']}   login: {user} / {password}", flush=True)
    print(f"  (ingest {urls['ingest']}; {n_frames} test frames at {fps:g} fps"
          f"{'' if seconds is None else f' for {seconds:g} s'}; Ctrl-C stops)", flush=True)
    if threading.current_thread() is threading.main_thread():
        daemon.install_signal_handlers()
    started = time.monotonic()
    status = daemon.run(seconds=seconds)
    elapsed = time.monotonic() - started
    stop_station.set()
    station_thread.join(timeout=15)
    store = Store(station_cfg.database_url, station_cfg.storage_dir)
    try:
        items = store.queue.counts()["items"]
    finally:
        store.close()
    return {"frames": status["frames"], "seconds": elapsed, "fps": status["frames"] / max(elapsed, 1e-9),
            "routed": status["routed"], "auto": status["auto"], "station_items": items,
            "console": urls["console"], "outbox_depth": status["outbox"]["depth"]}
