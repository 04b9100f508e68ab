"""`lineside` command line: run, station, calibrate, demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from edge.config import ConfigError, load_config
from edge.datasets import DatasetMissing
from edge.profile.profile import ProfileError
from edge.transport.outbox import OutboxError
from edge.vlm.pack import PackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Visual inspection at the line.")
log = logging.getLogger("lineside")
T = TypeVar("T")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="config.yaml describing the line and station")]
_USER_ERRORS = (ConfigError, PackError, ProfileError, DatasetMissing, OutboxError)


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
    from edge.station.server import run_station

    try:
        cfg = load_config(config)
    except _USER_ERRORS as exc:
        _fail(exc)
    run_station(cfg.station, on_ready=lambda url, ingest: log.info("console %s, ingest %s", url, ingest))


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
    from edge.demo import run_demo

    try:
        summary = run_demo(workdir, seconds=seconds, http_port=port, fps=fps, progress=_progress)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(
        f"demo: {summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps), "
        f"routed to review {summary['routed']}, auto-decided {summary['auto']}, "
        f"in the station {summary['station_items']}")


def main() -> None:  # pragma: no cover - console script alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
