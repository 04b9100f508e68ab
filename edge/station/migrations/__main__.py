"""``python -m edge.station.migrations --url URL <alembic command ...>``: Alembic's own CLI on these migrations."""

from __future__ import annotations

import argparse
import sys

from alembic.config import CommandLine

from edge.station.migrations import alembic_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--url", required=True, help="database URL, e.g. sqlite:///var/station/station.db")
    known, rest = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    cli = CommandLine(prog="python -m edge.station.migrations")
    options = cli.parser.parse_args(rest)
    if not hasattr(options, "cmd"):
        cli.parser.error("an alembic command is needed (upgrade, revision, current, history, check, ...)")
    cfg = alembic_config(known.url)
    cfg.cmd_opts = options
    cli.run_cmd(cfg, options)


if __name__ == "__main__":
    main()
