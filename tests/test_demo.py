"""`lineside demo` end to end, in its own process: calibrates, streams, routes, stores — and never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.tools.net import free_port
from tests.conftest import REPO

SCRIPT = """
import json, sys
from pathlib import Path
from edge.demo import run_demo
summary = run_demo(Path(sys.argv[1]), seconds=float(sys.argv[2]), http_port=int(sys.argv[3]),
                   ingest_port=int(sys.argv[4]), fps=20)
summary["torch_loaded"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps(summary))
"""


def test_demo_puts_review_items_in_the_station_without_torch(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "demo"), "25", str(free_port()),
                             str(free_port())], capture_output=True, text=True, cwd=REPO, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["torch_loaded"] is False
    assert summary["frames"] > 0
    assert summary["routed"] > 0 and summary["auto"] > 0
    assert summary["station_items"] == summary["routed"]
    assert summary["outbox_depth"] == 0
    assert "console: http://127.0.0.1:" in result.stdout
