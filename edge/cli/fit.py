"""`lineside calibrate` and `lineside train`: fitting a line profile version."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edge import progress
from edge.cli.app import (
    USER_ERRORS,
    AlphaOption,
    BudgetOption,
    ConfigOption,
    DeltaOption,
    PolicyOption,
    app,
    fail,
    setup_cli_logging,
)
from edge.config import load_config

if TYPE_CHECKING:
    from edge.fit.refit import RoutingSpec



@app.command()
def calibrate(
    good: Annotated[Path, typer.Option(help="folder of good images of this line")],
    config: ConfigOption = Path("config.yaml"),
    defects: Annotated[Path | None, typer.Option(help="optional folder of defect images")] = None,
    vocab: Annotated[Path | None, typer.Option(help="defect vocabulary YAML (default: built in)")] = None,
    limit: Annotated[int | None, typer.Option(help="use at most this many good images")] = None,
    policy: PolicyOption = None,
    alpha: AlphaOption = None,
    delta: DeltaOption = None,
    budget: BudgetOption = None,
    defect_rate: Annotated[float | None, typer.Option(
        help="share of defective parts this line makes (e.g. 0.03), if known: good/defect thresholds then give "
             "the fewest wrong decisions at that rate; without it they balance the two error rates (default: "
             "the current version's; 0: not known)")] = None,
    search_subspace: Annotated[bool | None, typer.Option(
        "--search-subspace/--no-search-subspace",
        help="search the memory bank in the fewest dimensions that reproduce the full search on these images, "
             "measured here (a faster frame graph; README, 'Search subspace'; default: as the current version)",
        show_default=False)] = None,
    coarse_to_fine: Annotated[bool | None, typer.Option(
        "--coarse-to-fine/--no-coarse-to-fine",
        help="search the memory bank at the finest stride only where the next stride's few-shot score is highest "
             "(an eighth of its patches; a faster frame graph; README, 'Coarse-to-fine search'; default: as the "
             "current version)", show_default=False)] = None,
    verbose: bool = False,
) -> None:
    """Fit a new line-profile version from good (and labelled defect) images; a running daemon picks it up.
    The routing policy, the line's defect rate and the few-shot search asked for stay the current version's unless
    given."""
    setup_cli_logging(verbose)
    from dataclasses import replace

    from edge.fit.calibrate import calibrate as fit
    from edge.fit.calibrate import current_settings
    from edge.fit.refit import RoutingSpec
    from edge.images import list_images
    from edge.vlm.pack import load_pack
    from edge.vlm.vocabulary import load_vocabulary

    changes = _routing_changes(policy, alpha, delta, budget)
    try:
        cfg = load_config(config)
        settings = current_settings(cfg.line.profile)
        routing = replace(settings.routing if settings else RoutingSpec(), **changes)
        rate = (settings.defect_rate if settings else None) if defect_rate is None else (defect_rate or None)
        if search_subspace is None:
            search_subspace = settings.search_subspace if settings else False
        if coarse_to_fine is None:
            coarse_to_fine = settings.coarse_to_fine if settings else False
        if settings is not None:
            typer.echo(_kept_summary(settings.version, routing, rate, search_subspace, coarse_to_fine))
        pack = load_pack(cfg.line.model.pack)
        good_files = list_images(good)[:limit]
        profile = fit(pack, load_vocabulary(vocab), good_files, cfg.line.id, cfg.line.profile,
                      defects=list_images(defects) if defects else None, provider=cfg.line.model.provider,
                      progress=progress.lines, routing=routing, defect_rate=rate, limits=cfg.line.images,
                      search_subspace=search_subspace, coarse_to_fine_search=coarse_to_fine)
    except USER_ERRORS as exc:
        fail(exc)
    typer.echo(f"profile {profile.describe()} written to {cfg.line.profile} "
               f"(threshold {profile.anomaly_threshold:.3f}, {profile.metrics['seconds']} s)")
    for line in choices_summary(profile.metrics):
        typer.echo(line)
    typer.echo(_routing_summary(profile.metrics))


def _kept_summary(version: str, routing: RoutingSpec, defect_rate: float | None, search_subspace: bool,
                  coarse_to_fine: bool) -> str:
    """The line's settings a new calibration goes on with: the current version's where no option replaced them."""
    rate = f"{defect_rate:g}" if defect_rate is not None else "not known"
    searches = [name for name, asked in (("in a subspace", search_subspace), ("coarse to fine", coarse_to_fine))
                if asked]
    search = " and ".join(searches) if searches else "at every patch in all dimensions"
    return (f"routing by {_policy_words(asdict(routing))}, the line's defect rate {rate}, the few-shot search "
            f"{search}: from {version} where --policy, --alpha, --delta, --budget, --defect-rate, "
            "--[no-]search-subspace or --[no-]coarse-to-fine do not say otherwise")


def _routing_spec(policy: str, alpha: float, delta: float, budget: float) -> RoutingSpec:
    from edge.fit.refit import RoutingSpec

    if policy not in ("risk", "budget"):
        fail(ValueError(f"--policy must be risk or budget, not {policy!r}"))
    try:
        return RoutingSpec(policy, alpha, delta, budget)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(exc)
        raise


def _routing_changes(policy: str | None, alpha: float | None, delta: float | None, budget: float | None
                     ) -> dict[str, Any]:
    """The routing options given on the command line, each checked as calibrate checks it."""
    from edge.fit.refit import RoutingSpec

    given = {k: v for k, v in (("policy", policy), ("alpha", alpha), ("delta", delta), ("budget", budget))
             if v is not None}
    default = RoutingSpec()
    _routing_spec(policy or default.policy, default.alpha if alpha is None else alpha,
                  default.delta if delta is None else delta, default.budget if budget is None else budget)
    return given


def choices_summary(metrics: dict[str, Any]) -> list[str]:
    """What the fit chose, and on what evidence: who decides the frame's verdict, where its regions come from, and
    the images it could not read — one line each, for the line engineer who runs calibrate or train."""
    lines = []
    head, fused = metrics.get("head_cv_accuracy"), metrics.get("fused_balanced_accuracy")
    if head is None:
        lines.append("verdict: the fused anomaly score against the good images' spread (no classifier head: it needs "
                     "at least 2 labelled defects and 2 good frames)")
    elif metrics.get("head_in_use"):
        against = (f", against the fused anomaly score's {fused:.3f} (its threshold fit on them)"
                   if fused is not None else "")
        lines.append(f"verdict: the classifier head — out-of-fold accuracy {head:.3f} on {metrics.get('rows')} "
                     f"labelled frames{against}")
    else:
        lines.append(f"verdict: the fused anomaly score — accuracy {fused:.3f} on the {metrics.get('rows')} labelled "
                     f"frames (its threshold fit on them); the classifier head's out-of-fold {head:.3f} is not better")
    source = metrics.get("region_source")
    if source == "line model":
        weight, by_weight = metrics.get("region_map_weight"), metrics.get("region_pixel_auroc_by_map_weight") or {}
        added = (f" plus {weight:g} × the anomaly map (pixel AUROC {by_weight[f'{weight:g}']:.3f} against the line "
                 f"model's alone {by_weight['0']:.3f})" if weight and f"{weight:g}" in by_weight else "")
        lines.append(f"regions: from the line model{added} (region F1 {metrics['region_f1_line_model']:.3f} against "
                     f"the anomaly map's {metrics['region_f1_anomaly_map']:.3f} on held-out pasted defects)")
    elif source == "map" and "region_f1_line_model" in metrics:
        lines.append(f"regions: from the anomaly map (region F1 {metrics['region_f1_anomaly_map']:.3f}; the line "
                     f"model's {metrics['region_f1_line_model']:.3f} is not 0.02 better)")
    elif source:
        lines.append(f"regions: from the anomaly map: {source.removeprefix('map (').removesuffix(')')}"
                     if source.startswith("map (") else f"regions: from the {source}")
    if source and metrics.get("region_cut"):
        lines[-1] += f"; cut {metrics['region_cut']}"
        if metrics.get("boxed_frames"):
            lines[-1] += (f", fitted to the operator's boxes on {metrics['boxed_frames']} frame(s) and "
                          f"{metrics.get('pasted_defects', 0)} pasted defect(s)")
    if metrics.get("line_model"):
        lines.append(f"line model: {metrics['line_model']}")
    if "search_dims" in metrics:
        lines.append(_search_summary(metrics["search_dims"], metrics.get("search_agreement") or {}))
    if "coarse_to_fine" in metrics:
        lines.append(f"search: coarse to fine, {metrics['coarse_to_fine']}"
                     + (" (where the next stride's few-shot score is highest)" if "searched" in metrics[
                         "coarse_to_fine"] else ""))
    suspects = metrics.get("label_suspects") or []
    if suspects:
        other = {"defect": "good", "good": "defect"}
        named = "; ".join(f"{s['frame']} (labelled {s['label']}, decided {other[s['label']]} by {s['margin']:.1f})"
                          for s in suspects[:3])
        lines.append(f"labels to check: the labelled frames decided against their labels most surely out of fold, "
                     f"where a wrong label is likeliest — {named}; {len(suspects)} in the version's metrics "
                     f"(label_suspects)")
    unreadable = metrics.get("unreadable_images") or []
    if unreadable:
        lines.append(f"skipped {len(unreadable)} unreadable image(s), first {unreadable[0]} (the log names each)")
    return lines


def _search_summary(dims: dict[str, int], agreement: dict[str, dict[str, float]]) -> str:
    """Where the memory bank is searched in fewer dimensions, and how closely that reproduced the full search."""
    from edge.grounding.anomaly import SEARCH_CANDIDATES

    parts = []
    for stride, measured in sorted(agreement.items(), key=lambda kv: int(kv[0])):
        if stride in dims:
            k = str(dims[stride])
            parts.append(f"stride {stride} in {k} dimensions, its {SEARCH_CANDIDATES} nearest there compared again in "
                         f"all (scores correlate {measured[k]:.3f} with the full search on bank images it was built "
                         "without)")
        else:
            best = max(measured.values(), default=float("nan"))
            parts.append(f"stride {stride} in all (no subspace tried reproduced it: best {best:.3f})")
    return "search: the memory bank at " + "; ".join(parts)


def _policy_words(spec: dict[str, Any]) -> str:
    if spec["policy"] == "budget":
        return f"budget {spec['budget']:.0%} (at most that share of frames to review)"
    return f"risk ≤ {spec['alpha']:.1%} with confidence {1 - spec['delta']:.0%}"


def _routing_summary(metrics: dict[str, Any]) -> str:
    routing = metrics.get("routing")
    if not routing:
        asked = metrics.get("routing_policy")
        kept = f"; once a predictor is fit, it routes by {_policy_words(asked)}" if asked else ""
        return f"failure predictor: {metrics.get('failure_predictor', 'none')} — routing uses the baseline " \
               f"uncertainty and routing.review_threshold{kept}"
    cal = routing["calibration"]
    others = {float(a): c for a, c in (metrics.get("coverage_by_alpha") or {}).items()
              if float(a) != routing["alpha"]}
    menu = ("; other risks (--alpha) would auto-decide: " + ", ".join(
        f"≤ {a * 100:g}% → {c:.0%}" for a, c in sorted(others.items()))) if others else ""
    if routing["policy"] == "risk" and not cal["accepted"]:
        why = (f" (it needs the surest {cal['needed']} out-of-fold decisions all right; the first wrong one comes "
               f"after {cal['clean_run']})" if "needed" in cal else "")
        return (f"routing: risk ≤ {routing['alpha']:.1%} with confidence {1 - routing['delta']:.0%} cannot be "
                f"vouched for from {cal['n']} labelled frames{why}: every frame goes to review until `lineside "
                f"train` adds reviews (or choose --policy budget){menu}; failure AUROC "
                f"{metrics.get('failure_oof_auroc')}")
    if routing["policy"] == "risk":
        return (f"routing: risk ≤ {routing['alpha']:.1%} with confidence {1 - routing['delta']:.0%}: auto-decides "
                f"{cal['coverage']:.1%} of {cal['n']} out-of-fold frames ({cal['errors']} wrong, bound "
                f"{cal['upper_bound']:.2%}){menu}; failure AUROC {metrics.get('failure_oof_auroc')}")
    return (f"routing: budget {routing['budget']:.0%}: {cal['routed']} of {cal['n']} out-of-fold frames to review; "
            f"failure AUROC {metrics.get('failure_oof_auroc')}")


@app.command()
def train(
    config: ConfigOption = Path("config.yaml"),
    line: Annotated[str | None, typer.Option(help="line id (default: the config's line)")] = None,
    policy: PolicyOption = None,
    alpha: AlphaOption = None,
    delta: DeltaOption = None,
    budget: BudgetOption = None,
    recheck: Annotated[bool, typer.Option(
        help="send the reviews among the labels to check back to the station's queue for another answer")] = False,
    verbose: bool = False,
) -> None:
    """Retrain the line profile from the station's reviewed frames: a new version the daemon picks up by itself.
    It routes as the current version does unless --policy, --alpha, --delta or --budget say otherwise."""
    setup_cli_logging(verbose)
    from edge.fit.train import train_profile
    from edge.station.training_export import ask_again, reviewed_frames
    from edge.vlm.pack import load_pack

    changes = _routing_changes(policy, alpha, delta, budget)
    try:
        cfg = load_config(config)
        line_id = line or cfg.line.id
        reviewed = reviewed_frames(cfg.station, line_id)
        typer.echo(f"line {line_id}: {len(reviewed)} reviewed frames in the station")
        profile = train_profile(load_pack(cfg.line.model.pack), cfg.line.profile, reviewed,
                                provider=cfg.line.model.provider, progress=progress.lines, limits=cfg.line.images,
                                routing_changes=changes)
    except USER_ERRORS as exc:
        fail(exc)
    unchanged = profile.metrics.get("reviews_already_in_rows", 0)
    kept = f"; {unchanged} already in its rows with the same answer, not read again" if unchanged else ""
    if profile.metrics.get("reviews_left_out"):
        kept += f"; the {profile.metrics['reviews_left_out']} oldest reviews left out of its rows (it keeps the latest)"
    typer.echo(f"profile {profile.describe()} written to {cfg.line.profile} from {profile.metrics['trained_from']} "
               f"+ {profile.metrics['reviewed_frames']} reviewed frames read{kept} ({profile.metrics['rows']} rows, "
               f"{profile.metrics['seconds']} s)")
    for line in choices_summary(profile.metrics):
        typer.echo(line)
    typer.echo(_routing_summary(profile.metrics))
    if recheck:
        try:
            sent = ask_again(cfg.station, list(profile.metrics.get("label_suspect_items", [])), "lineside train")
        except USER_ERRORS as exc:
            fail(exc)
        typer.echo(f"recheck: {len(sent)} review(s) among the labels to check sent back to the station's queue for "
                   f"another answer{': console items ' + ', '.join(map(str, sent)) if sent else ''}")
