"""`lineside` command line: run, station, calibrate, demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from edge.config import ConfigError, load_config
from edge.datasets import DatasetMissing
from edge.profile.profile import ProfileError
from edge.transport.keys import KeyFileError
from edge.transport.outbox import OutboxError
from edge.vlm.pack import PackError

if TYPE_CHECKING:
    from edge.station.store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Visual inspection at the line.")
log = logging.getLogger("lineside")
T = TypeVar("T")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="config.yaml describing the line and station")]
_USER_ERRORS = (ConfigError, PackError, ProfileError, DatasetMissing, OutboxError, KeyFileError)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _progress(items: Iterable[T], label: str) -> Iterable[T]:
    """A plain progress line on stderr (no extra dependency); redraws in place on a terminal."""
    seq = list(items)
    started = time.monotonic()
    for i, item in enumerate(seq, 1):
        yield item
        if sys.stderr.isatty() or i == len(seq):
            end = "\n" if i == len(seq) else "\r"
            sys.stderr.write(f"  {label}: {i}/{len(seq)} ({time.monotonic() - started:.1f} s){end}")
            sys.stderr.flush()


@app.command()
def run(config: ConfigOption = Path("config.yaml"), seconds: Annotated[float | None, typer.Option(
        help="stop after this many seconds")] = None, verbose: bool = False) -> None:
    """Run the line-side daemon for the line in the config."""
    _setup_logging(verbose)
    from edge.daemon import Daemon

    try:
        cfg = load_config(config)
        daemon = Daemon(cfg.line)
    except _USER_ERRORS as exc:
        _fail(exc)
    daemon.install_signal_handlers()
    status = daemon.run(seconds=seconds)
    typer.echo(json.dumps(status))


@app.command()
def station(config: ConfigOption = Path("config.yaml"), verbose: bool = False) -> None:
    """Run the review station: ZeroMQ ingest and the web console."""
    _setup_logging(verbose)
    from edge.station.ingest import IngestError
    from edge.station.server import StationError, run_station

    try:
        cfg = load_config(config)
        run_station(cfg.station, on_ready=lambda url, ingest: log.info("console %s, ingest %s", url, ingest))
    except (*_USER_ERRORS, IngestError, StationError) as exc:
        _fail(exc)


@app.command()
def calibrate(
    good: Annotated[Path, typer.Option(help="folder of good images of this line")],
    config: ConfigOption = Path("config.yaml"),
    defects: Annotated[Path | None, typer.Option(help="optional folder of defect images")] = None,
    vocab: Annotated[Path | None, typer.Option(help="defect vocabulary YAML (default: built in)")] = None,
    limit: Annotated[int | None, typer.Option(help="use at most this many good images")] = None,
    verbose: bool = False,
) -> None:
    """Fit a new line-profile version from good images; the daemon uses it on its next start."""
    _setup_logging(verbose)
    from edge.profile.calibrate import calibrate as fit
    from edge.profile.calibrate import list_images
    from edge.profile.profile import load_vocabulary
    from edge.vlm.pack import load_pack

    try:
        cfg = load_config(config)
        pack = load_pack(cfg.line.model.pack)
        good_files = list_images(good)[:limit]
        profile = fit(pack, load_vocabulary(vocab), good_files, cfg.line.id, cfg.line.profile,
                      defects=list_images(defects) if defects else None, provider=cfg.line.model.provider,
                      progress=_progress)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"profile {profile.describe()} written to {cfg.line.profile} "
               f"(threshold {profile.anomaly_threshold:.3f}, {profile.metrics['seconds']} s)")


@app.command()
def demo(
    seconds: Annotated[float | None, typer.Option(help="stop by itself after this many seconds")] = None,
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its profile, outbox and database")] = Path(
        "var/demo"),
    port: Annotated[int, typer.Option(help="console HTTP port")] = 8080,
    fps: Annotated[float, typer.Option(help="pace of the demo source")] = 10.0,
    verbose: bool = False,
) -> None:
    """Calibrate a demo textile line (first run), start station + daemon on the textile test split."""
    _setup_logging(verbose)
    from edge.demo import DemoError, run_demo

    try:
        summary = run_demo(workdir, seconds=seconds, http_port=port, fps=fps, progress=_progress)
    except (*_USER_ERRORS, DemoError) as exc:
        _fail(exc)
    typer.echo(
        f"demo: {summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps), "
        f"routed to review {summary['routed']}, auto-decided {summary['auto']}, "
        f"in the station {summary['station_items']}")


@app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", help="folder to write the key pair into")],
    name: Annotated[str, typer.Option("--name", help="file name stem: NAME.key (public), NAME.key_secret")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing pair (peers with the old key are refused)")]
    = False,
) -> None:
    """Create a ZeroMQ CURVE key pair for the edge–station link."""
    from edge.transport.keys import create_keypair

    try:
        public, secret = create_keypair(out, name, overwrite=overwrite)
    except KeyFileError as exc:
        _fail(exc)
    typer.echo(f"public key {public} (give this to the other side)\nsecret key {secret} (keep it here, mode 0600)")


users_app = typer.Typer(no_args_is_help=True, help="Console users of the review station.")
app.add_typer(users_app, name="users")


def _station_store(config: Path) -> Store:
    from edge.station.store import Store  # lazily: the daemon's commands do not need SQLAlchemy

    try:
        cfg = load_config(config)
    except _USER_ERRORS as exc:
        _fail(exc)
    return Store(cfg.station.database_url, cfg.station.storage_dir)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, _ . @ -)")],
    role: Annotated[str, typer.Option(help="reviewer or admin")] = "reviewer",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from the first line of stdin instead of a prompt")] = False,
    config: ConfigOption = Path("config.yaml"),
) -> None:
    """Add a console user; the password is asked for (twice) unless --password-stdin."""
    from edge.station.users import UserError, add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    store = _station_store(config)
    try:
        user = add_user(store, name, password, role)
    except UserError as exc:
        _fail(exc)
    finally:
        store.close()
    typer.echo(f"user {user.username} added ({user.role})")


@users_app.command("list")
def users_list(config: ConfigOption = Path("config.yaml")) -> None:
    """List console users."""
    from edge.station.users import list_users

    store = _station_store(config)
    try:
        for user in list_users(store):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created_wall))
            typer.echo(f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'active'}\t{created}")
    finally:
        store.close()


@users_app.command("disable")
def users_disable(name: str, config: ConfigOption = Path("config.yaml"),
                  enable: Annotated[bool, typer.Option(help="enable the user again instead")] = False) -> None:
    """Disable a console user (their sessions end at once); --enable undoes it."""
    from edge.station.users import UserError, set_disabled

    store = _station_store(config)
    try:
        user = set_disabled(store, name, not enable)
    except UserError as exc:
        _fail(exc)
    finally:
        store.close()
    typer.echo(f"user {user.username} {'disabled' if user.disabled else 'enabled'}")


def main() -> None:  # pragma: no cover - console script alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
