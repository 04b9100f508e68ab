"""The house's layer contract (pyproject.toml, [tool.importlinter]; docs/architecture.md) holds, and breaks on an
import that runs from a lower layer back up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=tree, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(tree)})


def test_the_layers_hold_and_an_upward_import_breaks_them(tmp_path: Path) -> None:
    shutil.copytree(REPO / "edge", tmp_path / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    # the frame's algorithm reaching up into the daemon that runs it
    regions = tmp_path / "edge" / "grounding" / "regions.py"
    regions.write_text(regions.read_text() + "\nfrom edge.daemon import Daemon  # noqa\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "edge.grounding is not allowed to import edge.daemon" in broken.stdout, broken.stdout


def test_run_time_code_importing_torch_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "edge", tmp_path / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    anomaly = tmp_path / "edge" / "grounding" / "anomaly.py"
    anomaly.write_text(anomaly.read_text() + "\n\ndef _late() -> None:\n    import torch  # noqa\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "edge.grounding.anomaly -> torch" in broken.stdout, broken.stdout
