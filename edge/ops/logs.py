"""Log set-up for every command: plain text (default) or one JSON object per line (``--log-format json``).

Error lines about a frame carry ``camera``, ``frame_id`` and ``stage`` (``log.error(..., extra=frame_context(...))``);
the JSON formatter puts them, and any other ``extra`` field, beside the message. ``RateLimitedLog`` keeps a failure
that repeats many times a second to one line per key and interval.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Literal

LogFormat = Literal["text", "json"]
CONTEXT_KEYS = ("line", "camera", "frame_id", "stage")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def frame_context(line: str, camera: str, frame_id: str | None, stage: str) -> dict[str, Any]:
    return {"line": line, "camera": camera, "frame_id": frame_id, "stage": stage}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            "pid": record.process, "thread": record.threadName}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RateLimitedLog:
    """One log line per `interval_s` per key, saying how many like it were held back since: a refused peer that
    retries every 200 ms, or a full disk that fails every item at every retry, must show in the log without filling
    it (or the disk's last bytes)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.ERROR, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        held = self._held.pop(key, 0)
        self._log.log(level, msg + (f" ({held} more like it in the last {self._interval:g} s)" if held else ""), *args)


def setup_logging(verbose: bool = False, fmt: LogFormat = "text", *, terminal_level: int = logging.NOTSET,
                  log_file: Path | None = None) -> None:
    """Log lines to stderr (INFO, DEBUG with ``verbose``; only ``terminal_level`` and worse when it is set and not
    ``verbose``) and, with ``log_file``, every INFO line to that file too. Alembic's INFO chatter (its plugins,
    the migration context on every start) shows only with ``verbose``; the station's own line about a migration
    stays."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(logging.NOTSET if verbose else terminal_level)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()
    root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("alembic").setLevel(logging.NOTSET if verbose else logging.WARNING)
