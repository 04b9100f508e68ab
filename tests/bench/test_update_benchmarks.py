"""scripts/update_benchmarks.py rewrites only the generated block, with command, machine line and date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
_spec = importlib.util.spec_from_file_location("update_benchmarks", REPO / "scripts" / "update_benchmarks.py")
assert _spec is not None and _spec.loader is not None
update_benchmarks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_benchmarks)

RESULT = {"command": "lineside bench all --json", "date": "2026-11-25 12:00:00 UTC", "encoder_fps": 100.0,
          "pipeline_fps": 40.0, "pipeline_over_encoder": 0.4, "ingest_fps": 1200.0, "console_queue_ms": 12.0,
          "rss_mb": 250.0, "machine": {"cores": 2, "cpu": "AMD EPYC", "provider": "cpu"}}


def test_rewrites_only_the_block() -> None:
    doc = "# Benchmarks\n\nprose before\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nprose after\n"
    out = update_benchmarks.update(doc, RESULT)
    assert out.startswith("# Benchmarks\n\nprose before\n") and out.endswith("prose after\n")
    assert "old table" not in out
    assert "`lineside bench all --json`" in out and "2 cores, AMD EPYC, provider cpu" in out
    assert "2026-11-25 12:00:00 UTC" in out
    assert "| `pipeline_over_encoder` | ≥ 0.85 | 0.400 | **no** |" in out
    assert "| `ingest_fps` | ≥ 1,000 frames/s (50 KB JPEG) | 1,200.0 | yes |" in out
    assert "| `latency_p99_over_p50` |" in out and "not measured" in out
    assert update_benchmarks.update(out, RESULT) == out  # idempotent


def test_the_machine_line_names_the_cpus_int8_target_when_the_run_has_it() -> None:
    run = {**RESULT, "machine": {**RESULT["machine"], "cpu_target": "x86-vnni"}}
    assert update_benchmarks.machine_line(run).startswith("2 cores, AMD EPYC (x86-vnni), provider cpu")


def test_refuses_a_file_without_the_block() -> None:
    with pytest.raises(SystemExit):
        update_benchmarks.update("# no block\n", RESULT)


def test_committed_benchmarks_md_has_the_block() -> None:
    text = (REPO / "BENCHMARKS.md").read_text()
    assert update_benchmarks.BEGIN in text and update_benchmarks.END in text
