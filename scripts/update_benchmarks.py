"""Rewrite BENCHMARKS.md's measured tables from `lineside bench all --json` output.

    .venv/bin/lineside bench all --json > var/bench.json
    .venv/bin/python scripts/update_benchmarks.py var/bench.json      # or: no argument = run the bench now

Only the text between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced; the prose around it (the
before/after ratios, the profiles that explain a gap) is written by people. Each table carries the command, the
machine line and the date of the run it came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# (key, goal text, test on the value, unit)
GOALS: list[tuple[str, str, Any]] = [
    ("pipeline_over_encoder", "≥ 0.85", lambda v: v >= 0.85),
    ("pipeline_fps", "≥ 30 fps", lambda v: v >= 30),
    ("latency_p99_over_p50", "≤ 2 (p99 ≤ 2 × median, 15 fps input)", lambda v: v <= 2),
    ("backlog_end", "0 frames waiting at the end (no backlog growth)", lambda v: v == 0),
    ("ingest_fps", "≥ 1,000 frames/s (50 KB JPEG)", lambda v: v >= 1000),
    ("console_queue_ms", "< 300 ms at 100,000 items", lambda v: v < 300),
    ("rss_mb", "≤ 400 MB (daemon)", lambda v: v <= 400),
]

SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Encoder (bare ONNX Runtime session)", [("encoder_fps", "frames/s"), ("encoder_ms", "ms/frame")]),
    ("Pipeline (decode → encode → ground → caption → score → route → outbox)", [
        ("encoder_fps", "bare encoder frames/s, same run"), ("pipeline_fps", "frames/s"),
        ("pipeline_over_encoder", "ratio"), ("stage_preprocess_ms", "ms (resize, normalise)"),
        ("stage_encode_ms", "ms (image tower session.run)"),
        ("stage_ground_ms", "ms (the profile's frame graph: maps, features, line model)"),
        ("stage_inspect_total_ms", "ms (Inspector.inspect)"), ("pipeline_routed", "frames routed to the outbox"),
        ("rss_mb", "MB peak RSS after the pipeline part")]),
    ("Latency (paced input, every frame routed to a real station)", [
        ("latency_fps", "input frames/s"), ("latency_frames", "frames"), ("latency_p50_ms", "ms capture → decision"),
        ("latency_p99_ms", "ms capture → decision"), ("latency_p99_over_p50", "ratio"),
        ("durable_p50_ms", "ms capture → durable in the outbox"),
        ("durable_p99_ms", "ms capture → durable in the outbox"),
        ("commit_p50_ms", "ms capture → station commit"), ("commit_p99_ms", "ms capture → station commit"),
        ("backlog_max", "frames waiting, worst"), ("backlog_end", "frames waiting at the end")]),
    ("Ingest (station ROUTER + SQLite WAL, synchronous=FULL)", [
        ("ingest_fps", "acked frames/s"), ("ingest_senders", "DEALER senders"), ("ingest_jpeg_kb", "KB per JPEG"),
        ("ingest_acked", "acked"), ("ingest_stored", "rows stored (= acked: exactly once)")]),
    ("Console (queue page, real app, logged in)", [
        ("console_items", "items in the database"), ("console_queue_ms", "ms median, first page"),
        ("console_queue_max_ms", "ms worst"), ("console_filtered_ms", "ms median, filtered page")]),
]


def machine_line(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    target = f" ({m['cpu_target']})" if m.get("cpu_target") else ""  # x86-vnni, x86 or arm; absent in older runs
    return (f"{m.get('cores', '?')} cores, {m.get('cpu', '?')}{target}, provider {m.get('provider', '?')}, "
            f"Python {m.get('python', '?')}, load {m.get('load_1min', '?')} at start")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    stamp = (f"Command: `{result.get('command', 'lineside bench all --json')}` · Machine: {machine_line(result)} · "
             f"Date: {result.get('date', '?')}")
    out = ["### Goals", "", stamp, "", "| measure | goal | measured | met |", "|---|---|---|---|"]
    for key, goal, ok in GOALS:
        if key in result:
            out.append(f"| `{key}` | {goal} | {_fmt(result[key])} | {'yes' if ok(result[key]) else '**no**'} |")
        else:
            out.append(f"| `{key}` | {goal} | not measured | – |")
    for title, keys in SECTIONS:
        rows = [(k, unit) for k, unit in keys if k in result]
        if not rows:
            continue
        out += ["", f"### {title}", "", stamp, "", "| key | value | unit |", "|---|---|---|"]
        out += [f"| `{k}` | {_fmt(result[k])} | {unit} |" for k, unit in rows]
    return "\n".join(out)


def update(markdown: str, result: dict[str, Any]) -> str:
    if BEGIN not in markdown or END not in markdown:
        raise SystemExit(f"BENCHMARKS.md has no {BEGIN} … {END} block to rewrite")
    head, rest = markdown.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render(result)}\n{END}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", type=Path, help="output of `lineside bench all --json` (default: run it)")
    ap.add_argument("--file", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    if args.json is None:
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "bench", "all", "--json"], check=True,
                              capture_output=True, text=True, cwd=REPO)
        text = proc.stdout
    else:
        text = args.json.read_text()
    result = json.loads(text.strip().splitlines()[-1])
    args.file.write_text(update(args.file.read_text(), result))
    print(f"{args.file}: tables rewritten from the run of {result.get('date', '?')}")


if __name__ == "__main__":
    main()
