"""Benchmark: the console's queue page with 100,000 items in SQLite (issue 8: must answer in < 300 ms).

    .venv/bin/python tests/station/bench_queue.py [--items 100000] [--repeat 20]

Fills a temporary SQLite file by bulk insert (one region per item, 5 % reviewed, two lines, three classes), logs
a reviewer in through the real app (FastAPI TestClient: routing, session check, template rendering included)
and times: the first queue page, a filtered page, a deep keyset page and the JSON API. Prints the median and
the worst of ``--repeat`` requests each. Not a unit test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from console_support import login, make_user  # noqa: E402

from edge.bench.station import fill_queue  # noqa: E402
from edge.station.console import create_app  # noqa: E402
from edge.station.store import Store  # noqa: E402


def fill(store: Store, n: int, seed: int = 0) -> None:
    """The same 100k-item fill as `lineside bench console` (one definition, in edge.bench.station)."""
    fill_queue(store, n, seed)


def timed(client: TestClient, url: str, repeat: int) -> tuple[float, float, int]:
    times = []
    status = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        status = r.status_code
    return statistics.median(times), max(times), status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/station.db", Path(tmp) / "images")
        t0 = time.perf_counter()
        fill(store, args.items)
        print(f"filled {args.items} items in {time.perf_counter() - t0:.1f} s")
        make_user(store, "bench")
        with TestClient(create_app(store, Path(tmp) / "images")) as client:
            login(client, "bench")
            client.get("/")  # warm-up
            deep = client.get("/api/items", params={"limit": 50, "offset": 0})
            cursor = deep.headers["x-next-cursor"]
            pages = {
                "queue page (first 50, most uncertain)": "/",
                "queue page, filtered line+class+reason": "/?line=line-2&verdict=crack&reason=sampled",
                "queue page, sorted by age": "/?sort=age",
                "queue page, next page by cursor": f"/?after={cursor}",
                "queue page, 100 rows, all statuses": "/?status=all&limit=100",
                "GET /api/items (50)": "/api/items",
            }
            for label, url in pages.items():
                median, worst, status = timed(client, url, args.repeat)
                print(f"{label:45s} median {median:6.1f} ms   max {worst:6.1f} ms   (HTTP {status})")
        store.close()


if __name__ == "__main__":
    main()
