"""`lineside` command line. Each module registers its commands on the one app (edge.cli.app), in help order."""

from edge.cli import line, fit, tools, admin, pack  # noqa: F401,I001  (registers their commands, in this order)
from edge.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script alias
    app()
