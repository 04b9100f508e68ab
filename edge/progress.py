"""Progress of the long loops (calibrate, train, eval, quantise): a `Progress` is called with the items and a label
and yields the items back; `silent` says nothing, `lines` writes to stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
Progress = Callable[[Iterable[Any], str], Iterable[Any]]


def silent(items: Iterable[T], _label: str) -> Iterable[T]:
    return items


def lines(items: Iterable[T], label: str) -> Iterator[T]:
    """Progress on stderr: redrawn in place on a terminal, one line per ~10 % otherwise (logs, CI)."""
    seq = list(items)
    total = len(seq)
    started = time.monotonic()
    tty = sys.stderr.isatty()
    step = max(1, total // 10)
    for i, item in enumerate(seq, 1):
        yield item
        if i == total or tty or i % step == 0:
            end = "\n" if (i == total or not tty) else "\r"
            sys.stderr.write(f"  {label}: {i}/{total} ({time.monotonic() - started:.1f} s){end}")
            sys.stderr.flush()
