"""`lineside pack …`: model-pack commands (check, quantise, convert, export). Each command keeps its imports inside
so that `lineside run` never pays for onnx / torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from edge.cli.app import USER_ERRORS, app, fail

pack_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Model packs: check, quantise, convert, bring your own.")


@pack_app.command("quantize")
def quantize(
    pack: Annotated[Path, typer.Argument(help="FP32 model pack directory")],
    good: Annotated[Path, typer.Option(help="folder of good images of the line: calibration (every 5th is held out "
                                            "to measure the change)")],
    out: Annotated[Path, typer.Option(help="new pack directory (must not exist, or be empty)")],
    target: Annotated[str, typer.Option(help="CPU the pack is for: auto (this one), x86-vnni, x86, arm")] = "auto",
    max_images: Annotated[int, typer.Option(help="calibrate on at most this many good images")] = 200,
    float_layers: Annotated[int, typer.Option(help="keep the first N weight layers float (accuracy; see "
                                                   "edge/vlm/quantize.py kept_float)")] = 3,
    rounding: Annotated[str, typer.Option(help="int8 weight rounding: gptq (error-compensating, from the good "
                                               "images; minutes; edge/vlm/gptq.py) or nearest (seconds)")] = "gptq",
    eval_: Annotated[bool, typer.Option("--eval", help="also the image AUROC change on the textile calib split "
                                                       "(slow; needs the datasets extra)")] = False,
    quick: Annotated[bool, typer.Option(help="--eval on a small seeded subset")] = False,
) -> None:
    """INT8 image tower (ONNX Runtime static QDQ, per-channel, calibrated on good images): a complete new pack."""
    import json

    from edge.durable import write_atomic
    from edge.eval.quantized import auroc_change
    from edge.images import list_images
    from edge.vlm.pack import PackError, load_pack
    from edge.vlm.quantize import Rounding, Target, quantize_pack

    if target not in ("auto", "x86-vnni", "x86", "arm"):
        fail(ValueError(f"unknown --target {target!r} (auto, x86-vnni, x86 or arm)"))
    if rounding not in ("nearest", "gptq"):
        fail(ValueError(f"unknown --rounding {rounding!r} (nearest or gptq)"))
    try:
        result = quantize_pack(pack, list_images(good), out, target=cast(Target, target),
                               max_calibration=max_images, float_layers=float_layers,
                               rounding=cast(Rounding, rounding))
        typer.echo(result.summary())
        if result.pack.manifest["provenance"]["quantization"]["target"] == "x86":
            typer.echo("note: quantised for an x86 CPU without VNNI (7-bit weights, int8 kernels that do in three "
                       "instructions what VNNI does in one): expect a smaller speed-up and a larger accuracy change "
                       "than on a VNNI CPU; measure both here (`lineside bench int8`, `lineside eval --pack`; "
                       "BENCHMARKS.md, \"On a CPU without VNNI\")")
        if eval_:
            change = auroc_change(load_pack(pack), result.pack, quick=quick)
            typer.echo("textile calib split, image AUROC: " + ", ".join(f"{k} {v}" for k, v in change.items()))
            manifest = json.loads((out / "manifest.json").read_text())  # not hashed: the version stays
            manifest["provenance"]["quantization"]["textile_calib"] = change
            write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    except USER_ERRORS as exc:
        fail(exc)
    except ImportError as exc:  # onnx: the quantiser's dependency, in the build extra
        fail(PackError(f"quantisation needs {exc.name or 'onnx'} (pip install onnx, or the build extra)"))


@pack_app.command("fp16")
def fp16(
    pack: Annotated[Path, typer.Argument(help="FP32 model pack directory")],
    out: Annotated[Path, typer.Option(help="new pack directory (must not exist, or be empty)")],
) -> None:
    """Float16 towers (float32 inputs/outputs) for GPUs: a complete new pack; int8 towers are kept as they are."""
    from edge.vlm.pack import PackError
    from edge.vlm.quantize import fp16_pack

    try:
        new = fp16_pack(pack, out)
    except PackError as exc:
        fail(exc)
    except ImportError as exc:
        fail(PackError(f"fp16 conversion needs {exc.name or 'onnx'} (pip install onnx, or the build extra)"))
    typer.echo(f"pack {new.version} written to {new.directory}")


@pack_app.command("export")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="save_pretrained directory of a transformers CLIPModel or "
                                                    "SiglipModel (on disk: nothing is downloaded)")],
    out: Annotated[Path, typer.Option(help="new pack directory (must not exist, or be empty)")],
    name: Annotated[str | None, typer.Option(help="pack name (default: the checkpoint directory's name)")] = None,
) -> None:
    """Bring your own model: export a Hugging Face CLIP / SigLIP checkpoint as a pack (needs the build extra)."""
    import importlib.util
    import sys

    from edge.vlm.pack import PackError

    script = Path(__file__).resolve().parents[2] / "models" / "export_hf.py"
    spec = importlib.util.spec_from_file_location("export_hf", script) if script.is_file() else None
    if spec is None or spec.loader is None:
        fail(PackError(f"{script} not found: the exporter ships with the source checkout"))
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("export_hf", module)
        spec.loader.exec_module(module)
    except ImportError as exc:
        fail(PackError(f"the exporter needs the build extra (pip install -e '.[build]'): {exc}"))
    try:
        new = module.export_hf(checkpoint, out, name)
    except (module.ExportError, PackError) as exc:
        fail(exc)
    typer.echo(f"pack {new.version} written to {new.directory}")


@pack_app.command("check")
def check(
    directory: Annotated[Path, typer.Argument(help="model pack directory (manifest.json inside)")],
    reference: Annotated[bool, typer.Option(
        "--reference/--no-reference", help="reproduce the pack's reference outputs with the runtime (CPU)")] = True,
) -> None:
    """Manifest schema, sha256s, ONNX input/output names and shapes, reference outputs. One line per check; exit
    status 0 when all pass, 2 otherwise."""
    from edge.vlm.check import check_pack

    results = check_pack(directory, reference=reference)
    for result in results:
        typer.echo(result.line())
    failed = sum(not r.ok for r in results)
    typer.echo(f"{directory}: {len(results) - failed} checks passed" + (f", {failed} FAILED" if failed else ""))
    raise typer.Exit(2 if failed else 0)


app.add_typer(pack_app, name="pack")
