"""`lineside pack …`: model-pack commands (check, quantise, convert, export). Each command keeps its imports inside
so that `lineside run` never pays for onnx / torch."""

from __future__ import annotations

import typer

pack_app = typer.Typer(no_args_is_help=True, help="Model packs: check, quantise, convert, bring your own.")
