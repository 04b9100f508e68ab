"""`lineside eval`, `bench`, `faults`, `demo` and `soak`: evaluation, benchmarks and harnesses."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge import progress
from edge.cli.app import (
    USER_ERRORS,
    app,
    fail,
    invocation,
    setup_cli_logging,
)

if TYPE_CHECKING:
    pass



@app.command("eval")
def eval_(
    out: Annotated[Path, typer.Option(help="report directory (report.json, report.md, PNG plots, eval profiles)")],
    dataset: Annotated[str, typer.Option(help="textile | elpv | synthetic-loc | all")] = "all",
    quick: Annotated[bool, typer.Option(help="a small seeded subset of every set (CI, < 60 s)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the splits, shots and synthetic defects")] = 0,
    seeds: Annotated[str | None, typer.Option(help="several seeds, e.g. 0,1,2: a report per seed and the headline "
                                                   "figures' mean ± sd (--loop for the first only)")] = None,
    pack: Annotated[Path | None, typer.Option(help="model pack directory (default: the starter pack)")] = None,
    loop: Annotated[bool, typer.Option(help="also the active-learning simulation on ELPV (reviews retrain the "
                                            "profile; coverage and workload per round)")] = False,
    loop_every: Annotated[int, typer.Option(help="--loop: retrain after this many reviews")] = 200,
    operator_error: Annotated[float, typer.Option(
        help="--loop: also the loop with an operator who answers this share of frames wrong, as answered and with "
             "the labels to check answered again (train --recheck)")] = 0.0,
    bank_size: Annotated[int | None, typer.Option(help="memory-bank coreset size at stride 8 (stride 16 gets half; "
                                                       "default 2048) — the coreset ablation")] = None,
    search_subspace: Annotated[bool, typer.Option(help="profiles calibrated with --search-subspace (the few-shot "
                                                       "search in fewer dimensions) — its ablation")] = False,
    coarse_to_fine: Annotated[bool, typer.Option(help="profiles calibrated with --coarse-to-fine (the finest "
                                                      "stride searched where the next is high) — its ablation")
                              ] = False,
    verbose: bool = False,
) -> None:
    """Evaluate the models on fixed seeded splits of the textile, ELPV and synthetic-localisation sets."""
    setup_cli_logging(verbose)
    from edge.demo import default_pack_dir
    from edge.eval.run import DATASETS, run_eval, run_seeds
    from edge.vlm.pack import load_pack

    datasets = list(DATASETS) if dataset == "all" else [dataset]
    if any(d not in DATASETS for d in datasets):
        fail(ValueError(f"unknown dataset {dataset!r} (textile, elpv, synthetic-loc or all)"))
    try:
        if loop and "elpv" not in datasets:
            raise ValueError("--loop replays ELPV: use --dataset elpv or all")
        if not 0.0 <= operator_error < 0.5 or (operator_error and not loop):
            raise ValueError(f"--operator-error is a share of wrong answers in [0, 0.5) and needs --loop, got "
                             f"{operator_error}")
        banks = None if bank_size is None else {8: bank_size, 16: max(1, bank_size // 2)}
        if seeds:
            report = run_seeds(load_pack(pack or default_pack_dir()), datasets, out,
                               [int(s) for s in seeds.split(",") if s.strip()], quick=quick,
                               progress=progress.lines, loop=loop, loop_every=loop_every, bank_size=banks,
                               search_subspace=search_subspace, operator_error=operator_error,
                               coarse_to_fine=coarse_to_fine)
        else:
            report = run_eval(load_pack(pack or default_pack_dir()), datasets, out, quick=quick, seed=seed,
                              progress=progress.lines, loop=loop, loop_every=loop_every, bank_size=banks,
                              search_subspace=search_subspace, operator_error=operator_error,
                              coarse_to_fine=coarse_to_fine)
    except (*USER_ERRORS, ValueError) as exc:
        fail(exc)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"report written to {out} ({report['seconds']} s)")


@app.command()
def bench(
    part: Annotated[str, typer.Argument(
        help="encoder, pipeline, latency, ingest, console, int8, batch, all (these), review (the browser "
        "bench: one by one vs look-alike groups) or fit (calibrate and train times)")] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object (progress stays on stderr)")] = False,
    seconds: Annotated[float, typer.Option(help="time per part")] = 10.0,
    fps: Annotated[float, typer.Option(help="latency: input frame rate")] = 15.0,
    good_images: Annotated[int, typer.Option(help="textile train good images to calibrate the bench profile")] = 30,
    frames: Annotated[int, typer.Option(help="distinct textile test frames cycled through (review: routed "
                                             "frames to answer)")] = 60,
    senders: Annotated[int, typer.Option(help="ingest: DEALER senders")] = 4,
    console_items: Annotated[int, typer.Option(help="console and review: items in the queue")] = 100_000,
    reviewed: Annotated[int, typer.Option(help="fit: reviewed frames train learns from")] = 2000,
    pack: Annotated[Path | None, typer.Option(help="model pack directory (default: the starter pack)")] = None,
    provider: Annotated[str, typer.Option(help="ONNX Runtime provider: cpu, cuda, tensorrt, auto")] = "cpu",
    verbose: bool = False,
) -> None:
    """Measure each stage on this machine; ratios within one run are what compare across machines."""
    setup_cli_logging(verbose)
    from edge.bench.run import BenchOptions, run_parts
    from edge.demo import default_pack_dir

    opts = BenchOptions(pack=pack or default_pack_dir(), provider=provider, seconds=seconds, fps=fps,
                        good_images=good_images, frames=frames, senders=senders, console_items=console_items,
                        reviewed=reviewed)

    def say(message: str) -> None:
        typer.echo(f"  {message}", err=True)

    try:
        result = {"command": " ".join(["lineside", *sys.argv[1:]]), **run_parts([part], opts, say)}
    except (*USER_ERRORS, ValueError, RuntimeError) as exc:
        fail(exc)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:28s} {value}")


@app.command()
def faults(
    frames: Annotated[int, typer.Option(help="frames the edge routes per scenario")] = 10_000,
    out: Annotated[Path, typer.Option(help="where results.md, results.json and each scenario's files go")] = Path(
        "var/faults"),
    scenarios: Annotated[str, typer.Option(
        help="comma list of station_kill, edge_kill, unreachable, slow, disk_full, dup_reorder")] = (
        "station_kill,edge_kill,unreachable,slow,disk_full,dup_reorder"),
    rate: Annotated[float, typer.Option(help="frames per second the edge routes")] = 250.0,
    outage_s: Annotated[float, typer.Option(help="unreachable and disk_full: how long the fault lasts, s")] = 60.0,
    kills: Annotated[int, typer.Option(help="station_kill and edge_kill: how many kill -9")] = 5,
    fsync: Annotated[str, typer.Option(help="the edge outbox's fsync policy: always or batch")] = "always",
    timeout_s: Annotated[float, typer.Option(help="a scenario not finished by then fails, s")] = 900.0,
    database_url: Annotated[str | None, typer.Option(
        help="station database (default: a SQLite file per scenario)")] = None,
) -> None:
    """Fault injection on the review transport: kill -9 of station and edge, outages, a slow link, a full disk,
    duplicates and reordering; every routed frame must reach the station exactly once."""
    from edge.tools.faults.__main__ import run_faults, scenario_names
    from edge.tools.faults.harness import FaultOptions

    if fsync not in ("always", "batch"):
        fail(ValueError(f"--fsync {fsync!r}: use always or batch"))
    try:
        scenario_names(scenarios)
    except ValueError as exc:
        fail(exc)
    opts = FaultOptions(frames=frames, rate=rate, outage_s=outage_s, kills=kills, fsync=fsync, timeout_s=timeout_s,
                        database_url=database_url)
    raise typer.Exit(run_faults(out, opts, scenarios))


@app.command()
def demo(
    seconds: Annotated[float | None, typer.Option(help="stop by itself after this many seconds")] = None,
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its profile, outbox, database, config.yaml "
                                               "and demo.log")] = Path("var/demo"),
    port: Annotated[int, typer.Option(help="console HTTP port")] = 8080,
    ingest_port: Annotated[int, typer.Option(help="the station's ZeroMQ ingest port")] = 5571,
    fps: Annotated[float, typer.Option(help="pace of the demo line")] = 10.0,
    verbose: Annotated[bool, typer.Option(help="every log line on the terminal (else errors only; every line is "
                                               "in demo.log)")] = False,
) -> None:
    """Calibrate a demo textile line (first run), start station + daemon on new textile parts; the console's
    address and login come last."""
    log_file = workdir.resolve() / "demo.log"
    setup_cli_logging(verbose, terminal_level=logging.ERROR, log_file=log_file)
    from edge.demo import DemoError, run_demo

    try:
        summary = run_demo(workdir, seconds=seconds, http_port=port, fps=fps, progress=progress.lines,
                           ingest_port=ingest_port, command=invocation(), log_file=log_file)
    except (*USER_ERRORS, DemoError) as exc:
        fail(exc)
    typer.echo(
        f"demo: {summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} fps), "
        f"routed to review {summary['routed']}, auto-decided {summary['auto']}, "
        f"in the station {summary['station_items']}")


@app.command()
def soak(
    minutes: Annotated[float, typer.Option(help="how long to run, in minutes")] = 30.0,
    workdir: Annotated[Path, typer.Option(help="frames, profile, outbox, database and logs of the soak")] = Path(
        "var/soak"),
    fps: Annotated[float, typer.Option(help="pace of the looping textile source")] = 15.0,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 10.0,
    profile: Annotated[Path | None, typer.Option(
        help="line profile directory to use (default: calibrate one in the workdir on first run)")] = None,
    verbose: bool = False,
) -> None:
    """Station + daemon on a looping textile source: RSS, FDs, threads and latency over time, then a verdict."""
    setup_cli_logging(verbose)
    from edge.tools.soak import SoakError, describe_verdict, run_soak

    typer.echo(f"soak: {minutes:g} min at {fps:g} fps, a sample every {interval:g} s (workdir {workdir})")
    try:
        result = run_soak(workdir, minutes, fps=fps, interval_s=interval, profile=profile, echo=typer.echo)
    except (*USER_ERRORS, SoakError) as exc:
        fail(exc)
    typer.echo(describe_verdict(result.verdict))
    (workdir / "soak-result.json").write_text(json.dumps(
        {"minutes": minutes, "fps": fps, "warmup_s": result.warmup_s, "verdict": result.verdict,
         "samples": [vars(s) for s in result.samples]}, indent=1))
    if not result.passed:
        raise typer.Exit(1)
