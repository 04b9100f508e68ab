"""`lineside run` and `lineside station`: the two long-running processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge.cli.app import (
    USER_ERRORS,
    ConfigOption,
    app,
    fail,
    log,
    setup_cli_logging,
)
from edge.config import load_config

if TYPE_CHECKING:
    pass



@app.command()
def run(config: ConfigOption = Path("config.yaml"), seconds: Annotated[float | None, typer.Option(
        help="stop after this many seconds")] = None, verbose: bool = False) -> None:
    """Run the line-side daemon for the line in the config."""
    setup_cli_logging(verbose)
    from edge.daemon import Daemon

    try:
        cfg = load_config(config)
        daemon = Daemon(cfg.line)
    except USER_ERRORS as exc:
        fail(exc)
    daemon.config_path = config  # SIGHUP re-reads it
    daemon.install_signal_handlers()
    try:
        status = daemon.run(seconds=seconds)
    except OSError as exc:  # e.g. the health port or the decisions endpoint is taken
        fail(exc)
    typer.echo(json.dumps(status))
    if daemon.exit_code:
        raise typer.Exit(daemon.exit_code)


@app.command()
def station(config: ConfigOption = Path("config.yaml"), verbose: bool = False) -> None:
    """Run the review station: ZeroMQ ingest and the web console."""
    setup_cli_logging(verbose)
    from edge.station.ingest import IngestError
    from edge.station.server import StationError, run_station

    try:
        cfg = load_config(config)
        run_station(cfg.station, on_ready=lambda url, ingest: log.info("console %s, ingest %s", url, ingest))
    except (*USER_ERRORS, IngestError, StationError) as exc:
        fail(exc)
