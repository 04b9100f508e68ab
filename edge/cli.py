"""`lineside` command line: run, station, calibrate, eval, demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from edge.config import ConfigError, load_config
from edge.datasets import DatasetMissing
from edge.ops.logs import LogFormat, setup_logging
from edge.profile.profile import ProfileError
from edge.transport.keys import KeyFileError
from edge.transport.outbox import OutboxError
from edge.vlm.pack import PackError
from edge.vlm.pack_cli import pack_app

if TYPE_CHECKING:
    from edge.profile.fit import RoutingSpec
    from edge.station.store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Visual inspection at the line.")
log = logging.getLogger("lineside")
T = TypeVar("T")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="config.yaml describing the line and station")]
PolicyOption = Annotated[str, typer.Option(help="routing policy: risk (error rate ≤ alpha among auto-decided "
                                           "frames) or budget (at most --budget of frames to review)")]
AlphaOption = Annotated[float, typer.Option(help="risk policy: tolerated error rate among auto-decided frames")]
DeltaOption = Annotated[float, typer.Option(help="risk policy: the bound holds with probability 1 − delta")]
BudgetOption = Annotated[float, typer.Option(help="budget policy: largest share of frames sent to review")]
_USER_ERRORS = (ConfigError, PackError, ProfileError, DatasetMissing, OutboxError, KeyFileError)


_LOG_FORMAT: dict[str, LogFormat] = {"format": "text"}


@app.callback()
def _options(log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="LINESIDE_LOG_FORMAT",
        help="text, or json: one JSON object per line (errors carry camera, frame_id, stage)")] = "text") -> None:
    """Visual inspection at the line."""
    _LOG_FORMAT["format"] = log_format


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose, _LOG_FORMAT["format"])


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
    daemon.config_path = config  # SIGHUP re-reads it
    daemon.install_signal_handlers()
    try:
        status = daemon.run(seconds=seconds)
    except OSError as exc:  # e.g. the health port or the decisions endpoint is taken
        _fail(exc)
    typer.echo(json.dumps(status))
    if daemon.exit_code:
        raise typer.Exit(daemon.exit_code)


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
    policy: PolicyOption = "risk",
    alpha: AlphaOption = 0.01,
    delta: DeltaOption = 0.1,
    budget: BudgetOption = 0.2,
    defect_rate: Annotated[float | None, typer.Option(
        help="share of defective parts this line makes (e.g. 0.03), if known: good/defect thresholds then give "
             "the fewest wrong decisions at that rate; without it they balance the two error rates")] = None,
    verbose: bool = False,
) -> None:
    """Fit a new line-profile version from good (and labelled defect) images; a running daemon picks it up."""
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
                      progress=_progress, routing=_routing_spec(policy, alpha, delta, budget),
                      defect_rate=defect_rate)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"profile {profile.describe()} written to {cfg.line.profile} "
               f"(threshold {profile.anomaly_threshold:.3f}, {profile.metrics['seconds']} s)")
    typer.echo(_routing_summary(profile.metrics))


def _routing_spec(policy: str, alpha: float, delta: float, budget: float) -> RoutingSpec:
    from edge.profile.fit import RoutingSpec

    if policy not in ("risk", "budget"):
        _fail(ValueError(f"--policy must be risk or budget, not {policy!r}"))
    try:
        return RoutingSpec(policy, alpha, delta, budget)  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(exc)
        raise


def _routing_summary(metrics: dict[str, Any]) -> str:
    routing = metrics.get("routing")
    if not routing:
        return f"failure predictor: {metrics.get('failure_predictor', 'none')} — routing uses the baseline " \
               "uncertainty and routing.review_threshold"
    cal = routing["calibration"]
    if routing["policy"] == "risk" and not cal["accepted"]:
        return (f"routing: risk ≤ {routing['alpha']:.1%} with confidence {1 - routing['delta']:.0%} cannot be "
                f"vouched for from {cal['n']} labelled frames: every frame goes to review until `lineside train` "
                f"adds reviews (or choose --policy budget); failure AUROC {metrics.get('failure_oof_auroc')}")
    if routing["policy"] == "risk":
        return (f"routing: risk ≤ {routing['alpha']:.1%} with confidence {1 - routing['delta']:.0%}: auto-decides "
                f"{cal['coverage']:.1%} of {cal['n']} out-of-fold frames ({cal['errors']} wrong, bound "
                f"{cal['upper_bound']:.2%}); failure AUROC {metrics.get('failure_oof_auroc')}")
    return (f"routing: budget {routing['budget']:.0%}: {cal['routed']} of {cal['n']} out-of-fold frames to review; "
            f"failure AUROC {metrics.get('failure_oof_auroc')}")


@app.command()
def train(
    config: ConfigOption = Path("config.yaml"),
    line: Annotated[str | None, typer.Option(help="line id (default: the config's line)")] = None,
    policy: PolicyOption = "risk",
    alpha: AlphaOption = 0.01,
    delta: DeltaOption = 0.1,
    budget: BudgetOption = 0.2,
    verbose: bool = False,
) -> None:
    """Retrain the line profile from the station's reviewed frames: a new version the daemon picks up by itself."""
    _setup_logging(verbose)
    from edge.profile.train import train_profile
    from edge.station.training_export import reviewed_frames
    from edge.vlm.pack import load_pack

    try:
        cfg = load_config(config)
        line_id = line or cfg.line.id
        reviewed = reviewed_frames(cfg.station, line_id)
        typer.echo(f"line {line_id}: {len(reviewed)} reviewed frames in the station")
        profile = train_profile(load_pack(cfg.line.model.pack), cfg.line.profile, reviewed,
                                _routing_spec(policy, alpha, delta, budget), cfg.line.model.provider,
                                progress=_progress)
    except _USER_ERRORS as exc:
        _fail(exc)
    typer.echo(f"profile {profile.describe()} written to {cfg.line.profile} from {profile.metrics['trained_from']} "
               f"+ {profile.metrics['reviewed_frames']} reviewed frames ({profile.metrics['rows']} rows, "
               f"{profile.metrics['seconds']} s)")
    typer.echo(_routing_summary(profile.metrics))


@app.command("eval")
def eval_(
    out: Annotated[Path, typer.Option(help="report directory (report.json, report.md, PNG plots, eval profiles)")],
    dataset: Annotated[str, typer.Option(help="textile | elpv | synthetic-loc | all")] = "all",
    quick: Annotated[bool, typer.Option(help="a small seeded subset of every set (CI, < 60 s)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the splits, shots and synthetic defects")] = 0,
    pack: Annotated[Path | None, typer.Option(help="model pack directory (default: the starter pack)")] = None,
    loop: Annotated[bool, typer.Option(help="also the active-learning simulation on ELPV (reviews retrain the "
                                            "profile; coverage and workload per round)")] = False,
    loop_every: Annotated[int, typer.Option(help="--loop: retrain after this many reviews")] = 200,
    bank_size: Annotated[int | None, typer.Option(help="memory-bank coreset size at stride 8 (stride 16 gets half; "
                                                       "default 2048) — the coreset ablation")] = None,
    verbose: bool = False,
) -> None:
    """Evaluate the models on fixed seeded splits of the textile, ELPV and synthetic-localisation sets."""
    _setup_logging(verbose)
    from edge.demo import default_pack_dir
    from edge.eval.run import DATASETS, progress_lines, run_eval
    from edge.vlm.pack import load_pack

    datasets = list(DATASETS) if dataset == "all" else [dataset]
    if any(d not in DATASETS for d in datasets):
        _fail(ValueError(f"unknown dataset {dataset!r} (textile, elpv, synthetic-loc or all)"))
    try:
        if loop and "elpv" not in datasets:
            raise ValueError("--loop replays ELPV: use --dataset elpv or all")
        report = run_eval(load_pack(pack or default_pack_dir()), datasets, out, quick=quick, seed=seed,
                          progress=progress_lines, loop=loop, loop_every=loop_every,
                          bank_size=None if bank_size is None else {8: bank_size, 16: max(1, bank_size // 2)})
    except (*_USER_ERRORS, ValueError) as exc:
        _fail(exc)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"report written to {out} ({report['seconds']} s)")


@app.command()
def bench(
    part: Annotated[str, typer.Argument(
        help="encoder, pipeline, latency, ingest, console, int8, batch or all")] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object (progress stays on stderr)")] = False,
    seconds: Annotated[float, typer.Option(help="time per part")] = 10.0,
    fps: Annotated[float, typer.Option(help="latency: input frame rate")] = 15.0,
    good_images: Annotated[int, typer.Option(help="textile train good images to calibrate the bench profile")] = 30,
    frames: Annotated[int, typer.Option(help="distinct textile test frames cycled through")] = 60,
    senders: Annotated[int, typer.Option(help="ingest: DEALER senders")] = 4,
    console_items: Annotated[int, typer.Option(help="console: items in the queue")] = 100_000,
    pack: Annotated[Path | None, typer.Option(help="model pack directory (default: the starter pack)")] = None,
    provider: Annotated[str, typer.Option(help="ONNX Runtime provider: cpu, cuda, tensorrt, auto")] = "cpu",
    verbose: bool = False,
) -> None:
    """Measure each stage on this machine (issue 10); ratios within one run are what compare across machines."""
    _setup_logging(verbose)
    from edge.bench.run import BenchOptions, run_parts
    from edge.demo import default_pack_dir

    opts = BenchOptions(pack=pack or default_pack_dir(), provider=provider, seconds=seconds, fps=fps,
                        good_images=good_images, frames=frames, senders=senders, console_items=console_items)

    def say(message: str) -> None:
        typer.echo(f"  {message}", err=True)

    try:
        result = {"command": " ".join(["lineside", *sys.argv[1:]]), **run_parts([part], opts, say)}
    except (*_USER_ERRORS, ValueError, RuntimeError) as exc:
        _fail(exc)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:28s} {value}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def faults(ctx: typer.Context) -> None:
    """Fault-injection runs of the review transport (kill -9, outages, slow link, disk full, duplicates): `lineside
    faults --frames 10000 --out var/faults` — options as `python -m edge.ops.faults run --help`."""
    from edge.ops.faults import main

    raise typer.Exit(main(["run", *ctx.args]))


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
def soak(
    minutes: Annotated[float, typer.Option(help="how long to run (the issue's goal: 30)")] = 30.0,
    workdir: Annotated[Path, typer.Option(help="frames, profile, outbox, database and logs of the soak")] = Path(
        "var/soak"),
    fps: Annotated[float, typer.Option(help="pace of the looping textile source")] = 15.0,
    interval: Annotated[float, typer.Option(help="seconds between samples")] = 10.0,
    profile: Annotated[Path | None, typer.Option(
        help="line profile directory to use (default: calibrate one in the workdir on first run)")] = None,
    verbose: bool = False,
) -> None:
    """Station + daemon on a looping textile source: RSS, FDs, threads and latency over time, then a verdict."""
    _setup_logging(verbose)
    from edge.ops.soak import SoakError, describe_verdict, run_soak

    typer.echo(f"soak: {minutes:g} min at {fps:g} fps, a sample every {interval:g} s (workdir {workdir})")
    try:
        result = run_soak(workdir, minutes, fps=fps, interval_s=interval, profile=profile, echo=typer.echo)
    except (*_USER_ERRORS, SoakError) as exc:
        _fail(exc)
    typer.echo(describe_verdict(result.verdict))
    (workdir / "soak-result.json").write_text(json.dumps(
        {"minutes": minutes, "fps": fps, "warmup_s": result.warmup_s, "verdict": result.verdict,
         "samples": [vars(s) for s in result.samples]}, indent=1))
    if not result.passed:
        raise typer.Exit(1)


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
app.add_typer(pack_app, name="pack")


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
