"""`lineside bench`: every part runs end to end at tiny sizes and reports its keys (no timing thresholds here:
timings depend on the machine; BENCHMARKS.md holds the measured numbers)."""

from __future__ import annotations

import json

from tests.conftest import run_lineside

PART_KEYS = {
    "encoder": ["encoder_fps"],
    "pipeline": ["encoder_fps", "pipeline_fps", "pipeline_over_encoder"],
    "latency": ["latency_p50_ms", "latency_p99_ms", "durable_p50_ms", "durable_p99_ms", "commit_p50_ms",
                "commit_p99_ms"],
    "ingest": ["ingest_fps"],
    "console": ["console_queue_ms"],
}
TINY = ["--seconds", "0.6", "--good-images", "4", "--frames", "4", "--console-items", "300", "--senders", "2"]


def test_bench_all_json_has_every_key() -> None:
    proc = run_lineside("bench", "all", "--json", *TINY, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # one JSON object on stdout, progress on stderr
    assert "pipeline: round" in proc.stderr
    for part, keys in PART_KEYS.items():
        assert part in result["parts"]
        for key in keys:
            assert result[key] > 0, (part, key, result[key])
    assert result["ingest_stored"] == result["ingest_acked"]  # every ack is a stored item, none twice
    assert result["ingest_errors"] == 0
    assert result["commit_items"] > 0
    assert result["rss_mb"] > 0
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["provider"] == "cpu"


def test_bench_unknown_part_is_a_clear_error() -> None:
    proc = run_lineside("bench", "warp-drive", "--json")
    assert proc.returncode == 2
    assert "unknown bench part" in proc.stderr
