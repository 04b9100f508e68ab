"""`lineside demo`: a textile line from nothing to review items in the console, on the embedded starter pack.

First run: calibrates a demo line profile from 50 good and 50 labelled defect images of the textile train split.
Every run: writes the demo's ``config.yaml`` (so ``lineside users add … -c`` reaches the demo's database), lays every
textile image the profile was not fit on out as a folder source (1,900 parts, in a fixed shuffled order so good and
defective ones mix), starts the station (ZeroMQ ingest + console) in this process and the daemon over that folder at
~10 fps. ``FreshParts`` keeps the looping folder from repeating itself: each inspected file is replaced by the same
fabric turned or mirrored, so the queue fills with parts a person has not seen before, as on a real line.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge.config import Config, LineConfig, ModelConfig, SourceConfig, StationConfig, TransportConfig
from edge.datasets import TextileSplit, textile_split
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


LINE_LAYOUT = "distinct-parts-1"  # written beside the frames; another value (an older demo's) is laid out again


def line_sources(seed: int = 0) -> list[Path]:
    """Every textile image the demo profile was not fit on (train, calib and test splits), in a fixed shuffled
    order: the parts the demo line makes."""
    good, defects = demo_calibration_images(seed)
    fitted = set(good) | set(defects)
    splits: tuple[TextileSplit, ...] = ("train", "calib", "test")
    files = [p for split in splits for p, _ in textile_split(split) if p not in fitted]
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))]


def lay_out_line(directory: Path, sources: list[Path]) -> None:
    """``sources`` linked into ``directory`` as 00000.jpg, 00001.jpg, … (an older layout there is replaced)."""
    marker = directory / ".layout"
    if marker.is_file() and marker.read_text().strip() == LINE_LAYOUT:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.jpg"):
        old.unlink()
    for i, path in enumerate(sources):
        (directory / f"{i:05d}{path.suffix}").symlink_to(path)
    marker.write_text(LINE_LAYOUT + "\n")


def turned(image: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th look of a piece of fabric: the eight quarter turns and mirror images, then the same with the
    light a little brighter or darker for every further round (k = 0 is the image itself)."""
    out = np.rot90(image, k % 4)
    if (k // 4) % 2:
        out = out[:, ::-1]
    if k >= 8:
        shift = ((k // 8) * 7) % 31 - 15
        out = np.clip(out.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


class FreshParts(threading.Thread):
    """Keeps the looping demo folder from repeating itself: once the daemon has inspected the frame of file i in
    round r (``frames_done`` counts them), file i is replaced, atomically, by its source turned for round r + 1
    (``turned``). The folder source reads a file only after it was listed and rereads it a whole round later, so
    every frame it reads is a part it has not seen (a failed write only repeats one)."""

    def __init__(self, directory: Path, sources: list[Path], frames_done: Callable[[], int],
                 stop: threading.Event) -> None:
        super().__init__(name="DemoFreshParts", daemon=True)
        self.directory, self.sources, self.frames_done, self.stop = directory, sources, frames_done, stop
        self.renewed = 0
        # the rounds earlier runs of the demo used (kept beside the frames): a restarted demo reads the folder from
        # its first file again, so it renews with rounds of its own
        self.first_round = int(self._rounds_file.read_text()) if self._rounds_file.is_file() else 1

    @property
    def _rounds_file(self) -> Path:
        return self.directory / ".next-round"

    def save(self) -> None:
        """Remember the next unused round for the next run of the demo."""
        used = self.first_round + (self.renewed - 1) // len(self.sources) + 1 if self.renewed else self.first_round
        self._rounds_file.write_text(f"{used}\n")

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self._renew_inspected()
        # and the frames inspected since the last look: a restarted demo reads the folder from its first file
        # again and would send a part it has already inspected (and routed) once more
        self._renew_inspected()

    def _renew_inspected(self) -> None:
        n = len(self.sources)
        upto = self.frames_done()
        while self.renewed < upto:
            i, next_round = self.renewed % n, self.first_round + self.renewed // n
            self._renew(i, next_round)
            # counted once the file is in place, so a reader who waits on ``renewed`` sees the new part
            self.renewed += 1

    def _renew(self, i: int, next_round: int) -> None:
        target = self.directory / f"{i:05d}.jpg"
        image = cv2.imread(str(self.sources[i]))
        ok, data = (False, None) if image is None else cv2.imencode(
            ".jpg", turned(image, next_round), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok or data is None:
            log.warning("demo: could not make a new part from %s; file %s repeats", self.sources[i], target)
            return
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_bytes(data.tobytes())
        os.replace(temp, target)


def write_demo_config(path: Path, line: LineConfig, station: StationConfig) -> Path:
    """The demo's config.yaml, so that every ``lineside … -c`` command reaches the demo's line and database."""
    data = Config(line=line, station=station).model_dump(mode="json", exclude_defaults=True)
    path.write_text("# written by `lineside demo` on every start: the demo line and its station\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


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
             progress: Progress = silent, ingest_port: int = 5571, command: str = "lineside",
             log_file: Path | None = None) -> dict[str, Any]:
    """Calibrate (first run), start the station and the daemon; ``command`` is how the person started
    ``lineside`` (for the command lines printed), ``log_file`` where the log goes (printed too)."""
    from edge.daemon import Daemon
    from edge.station.server import run_station
    from edge.station.store import Store
    from edge.vlm.pack import load_pack

    workdir = workdir.resolve()
    line_cfg, station_cfg = demo_configs(workdir, http_port, fps, ingest_port)
    config_file = write_demo_config(workdir / "config.yaml", line_cfg, station_cfg)
    sources = line_sources()
    lay_out_line(workdir / "frames", sources)
    pack = load_pack(line_cfg.model.pack)
    if not _profile_fits(line_cfg.profile, pack.version):
        from edge.fit.calibrate import calibrate  # fitting (torch builds the profile's frame graph): first run only

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
    stop_parts = threading.Event()
    parts = FreshParts(workdir / "frames", sources, lambda: daemon.counters["frames"], stop_parts)
    parts.start()
    # the last lines a person reads: what runs, how to add a reviewer to this demo's database, where to log in
    print(f"demo line {line_cfg.id}: new textile parts at {fps:g} fps, the uncertain ones to review"
          f"{'' if seconds is None else f' for {seconds:g} s'}; Ctrl-C stops; log {log_file or 'above'}", flush=True)
    print(f"another console user: {command} users add NAME --role reviewer -c {config_file}", flush=True)
    print(f"console: {urls['console']}   login: {user} / {password}", flush=True)
    if threading.current_thread() is threading.main_thread():
        daemon.install_signal_handlers()
    started = time.monotonic()
    try:
        status = daemon.run(seconds=seconds)
    finally:
        stop_parts.set()
        parts.join(5)
        parts.save()
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
            "console": urls["console"], "outbox_depth": status["outbox"]["depth"], "config": str(config_file),
            "parts_renewed": parts.renewed}
