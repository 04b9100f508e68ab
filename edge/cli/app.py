"""The `lineside` app and what its commands share: options, logging set-up, the one-line user error, progress."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from edge.config import ConfigError
from edge.datasets import DatasetMissing
from edge.images import ImageError
from edge.ops.logs import LogFormat, setup_logging
from edge.profile.line_profile import ProfileError
from edge.transport.keys import KeyFileError
from edge.transport.outbox import OutboxError
from edge.vlm.pack import PackError
from edge.vlm.vocabulary import VocabularyError

# plain help (Click's layout): flags read "--verbose / --no-verbose", not a boxed table with "<bool>" types
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Visual inspection at the line.")
log = logging.getLogger("lineside")
T = TypeVar("T")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="config.yaml describing the line and station")]
# the routing options of calibrate and train: each left out stays what the line's current version has
PolicyOption = Annotated[str | None, typer.Option(
    help="routing policy: risk (error rate ≤ alpha among auto-decided frames) or budget (at most --budget of frames "
         "to review); default: the current version's, else risk")]
AlphaOption = Annotated[float | None, typer.Option(
    help="risk policy: tolerated error rate among auto-decided frames (default: the current version's, else 0.01)")]
DeltaOption = Annotated[float | None, typer.Option(
    help="risk policy: the bound holds with probability 1 − delta (default: the current version's, else 0.1)")]
BudgetOption = Annotated[float | None, typer.Option(
    help="budget policy: largest share of frames sent to review (default: the current version's, else 0.2)")]
USER_ERRORS = (ConfigError, PackError, ProfileError, VocabularyError, ImageError, DatasetMissing, OutboxError,
                KeyFileError)


_LOG_FORMAT: dict[str, LogFormat] = {"format": "text"}


@app.callback()
def _options(log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="LINESIDE_LOG_FORMAT",
        help="text, or json: one JSON object per line (errors carry camera, frame_id, stage)")] = "text") -> None:
    """Visual inspection at the line."""
    _LOG_FORMAT["format"] = log_format


def setup_cli_logging(verbose: bool, *, terminal_level: int = logging.NOTSET, log_file: Path | None = None) -> None:
    setup_logging(verbose, _LOG_FORMAT["format"], terminal_level=terminal_level, log_file=log_file)


def invocation() -> str:
    """How the person started this command, for command lines we print: `lineside` when that is on the PATH,
    else the path they typed (`.venv/bin/lineside`), or `python -m edge.cli`."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "lineside":
        found = shutil.which("lineside")
        if found is not None and Path(found).resolve() == argv0.resolve():
            return "lineside"
        return str(argv0) if not argv0.is_absolute() else _short(argv0)
    return f"{_short(Path(sys.executable))} -m edge.cli"


def _short(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else as it is."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)
