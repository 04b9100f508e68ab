"""`python -m edge.tools.faults run|station|edge` (`lineside faults` runs the same)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.tools.faults.harness import FaultOptions
from edge.tools.faults.processes import SCENARIOS, edge_main, station_main
from edge.tools.faults.scenarios import results_table, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.tools.faults", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run fault scenarios and write results.md / results.json")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=Path("var/faults"))
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--rate", type=float, default=250.0, help="frames/s the edge routes")
    p.add_argument("--outage-s", type=float, default=60.0, help="unreachable / disk full: how long")
    p.add_argument("--kills", type=int, default=5, help="station_kill / edge_kill: how many kill -9")
    p.add_argument("--fsync", choices=("always", "batch"), default="always", help="the edge outbox's fsync policy")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per scenario")
    p.add_argument("--database-url", default=None, help="station database (default: SQLite per scenario)")
    s = sub.add_parser("station", help="(internal) a station ingest process")
    s.add_argument("--database-url", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--bind", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--enospc-flag", default=None)
    e = sub.add_parser("edge", help="(internal) an edge outbox + sender process")
    e.add_argument("--station", required=True)
    e.add_argument("--outbox", required=True)
    e.add_argument("--routed-log", required=True)
    e.add_argument("--frames", type=int, required=True)
    e.add_argument("--rate", type=float, required=True)
    e.add_argument("--run", required=True)
    e.add_argument("--ack-timeout-s", type=float, default=1.0)
    e.add_argument("--fsync", choices=("always", "batch"), default="batch")
    e.add_argument("--drain-timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.command == "station":
        return station_main(args)
    if args.command == "edge":
        return edge_main(args)
    opts = FaultOptions(frames=args.frames, rate=args.rate, outage_s=args.outage_s, kills=args.kills,
                        fsync=args.fsync, timeout_s=args.timeout_s, database_url=args.database_url)
    try:
        return run_faults(args.out, opts, args.scenarios)
    except ValueError as exc:
        parser.error(str(exc))


def scenario_names(text: str) -> list[str]:
    """A comma list of scenarios; ValueError naming the unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; use {', '.join(SCENARIOS)}")
    return names


def run_faults(out: Path, opts: FaultOptions, scenarios: str) -> int:
    """Run the scenarios (a comma list), print their table; exit status 0 when every one passed."""
    results = run_all(out, opts, scenario_names(scenarios))
    print(results_table(results))
    print(f"written: {out / 'results.md'}, {out / 'results.json'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
