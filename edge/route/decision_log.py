"""The daemon's decision log: one JSON line per decided frame, rolled over by size (a line runs for years)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DecisionLog:
    """Appends decisions to `path`; past `max_bytes` it rolls <log> → <log>.1 → … → <log>.`keep` (the oldest goes)."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - held open for the daemon's life

    def write(self, decision: dict[str, Any]) -> None:
        self._file.write(json.dumps(decision) + "\n")
        if self._file.tell() >= self.max_bytes:
            self._roll()

    def close(self) -> None:
        self._file.close()

    def _roll(self) -> None:
        path, keep = self.path, self.keep
        self._file.close()
        try:
            for i in range(keep, 0, -1):
                older = path.with_name(f"{path.name}.{i}")
                if i == keep:
                    older.unlink(missing_ok=True)
                elif older.exists():
                    os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
            if keep:
                os.replace(path, path.with_name(f"{path.name}.1"))
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:  # a log that cannot roll keeps growing; deciding frames matters more
            log.error("decision log %s cannot roll over: %s", path, exc)
        self._file = open(path, "a", buffering=1)  # noqa: SIM115
