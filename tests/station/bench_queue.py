"""Benchmark: the console's queue page with 100,000 items in SQLite (the goal: it answers in < 300 ms).

    .venv/bin/python tests/station/bench_queue.py [--items 100000] [--repeat 20] [--stats [--reviewed 1.0]]

Fills a temporary SQLite file by bulk insert (one region per item, 5 % reviewed, two lines, three classes), logs
a reviewer in through the real app (FastAPI TestClient: routing, session check, template rendering included)
and times: the first queue page, a filtered page, a deep keyset page and the JSON API. Prints the median and
the worst of ``--repeat`` requests each. Not a unit test: timings depend on the machine.

``--stats`` also gives a share (``--reviewed``, default half) of the items a review (five reviewers, 80 % agreeing
with the model, spread over the last 48 h, 10 % with a second review) and times the stats page and its JSON, an
item page (its good references) and the first event of the live-arrivals stream.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).parent))

from console_support import login, make_user  # noqa: E402

from edge.bench.station import fill_queue  # noqa: E402
from edge.findings import GOOD  # noqa: E402
from edge.station.console import create_app  # noqa: E402
from edge.station.store import Store  # noqa: E402
from edge.station.tables import ReviewItemRow, ReviewRow  # noqa: E402


def fill(store: Store, n: int, seed: int = 0) -> None:
    """The same 100k-item fill as `lineside bench console` (one definition, in edge.bench.station)."""
    fill_queue(store, n, seed)


def add_reviews(store: Store, share: float, seed: int = 0, second_share: float = 0.1) -> int:
    """A review for ``share`` of the items (bulk insert), some with a second one; returns the number of reviews."""
    rng = random.Random(seed)
    now = time.time()
    classes = ("crack", "spot", GOOD)
    rows: list[dict[str, object]] = []
    with store.engine.begin() as conn:
        for item_id, verdict in conn.execute(select(ReviewItemRow.id, ReviewItemRow.verdict)):
            if rng.random() >= share:
                continue
            at = now - rng.random() * 48 * 3600
            for second in (False, True):
                if second and rng.random() >= second_share:
                    break
                final = verdict if rng.random() < 0.8 else rng.choice(classes)
                decision = "accept" if final == verdict else "reject" if final == GOOD else "relabel"
                rows.append(dict(item_id=item_id, decision=decision, final_verdict=final,
                                 defect_class=None if final == GOOD else final, reviewer=f"reviewer-{rng.randrange(5)}",
                                 created_wall=at + (600 if second else 0),
                                 seconds_spent=round(rng.lognormvariate(2, 0.6), 1),  # as the console records
                                 second_review=second))
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(ReviewRow), rows[start:start + 10_000])
        conn.execute(text("UPDATE review_items SET status = 'reviewed' WHERE id IN (SELECT item_id FROM reviews)"))
    return len(rows)


def timed(client: TestClient, url: str, repeat: int) -> tuple[float, float, float, int]:
    """Median and worst wall time, and median CPU time of this process (client and app run in it): on a shared
    machine the CPU figure says what the request costs, the wall figure what it cost with everyone else running."""
    times, cpu = [], []
    status = 0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        status = r.status_code
    return statistics.median(times), max(times), statistics.median(cpu), status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--stats", action="store_true", help="also time the stats page, an item page and the live stream")
    ap.add_argument("--reviewed", type=float, default=0.5, help="with --stats: share of items given a review")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/station.db", Path(tmp) / "images")
        t0 = time.perf_counter()
        fill(store, args.items)
        print(f"filled {args.items} items in {time.perf_counter() - t0:.1f} s")
        if args.stats:
            t0 = time.perf_counter()
            n = add_reviews(store, args.reviewed)
            print(f"added {n} reviews in {time.perf_counter() - t0:.1f} s")
        make_user(store, "bench")
        with TestClient(create_app(store, Path(tmp) / "images")) as client:
            login(client, "bench")
            client.get("/")  # warm-up
            deep = client.get("/api/items", params={"limit": 50, "offset": 0})
            cursor = deep.headers.get("x-next-cursor", "0:0")
            pages = {
                "queue page (first 50, most uncertain)": "/",
                "queue page, filtered line+class+reason": "/?line=line-2&verdict=crack&reason=sampled",
                "queue page, sorted by age": "/?sort=age",
                "queue page, next page by cursor": f"/?after={cursor}",
                "queue page, 100 rows, all statuses": "/?status=all&limit=100",
                "GET /api/items (50)": "/api/items",
            }
            if args.stats:
                top = store.queue.latest_item_id()
                pages.update({
                    "stats page (/stats)": "/stats",
                    "GET /api/stats/reviews": "/api/stats/reviews",
                    "item page (with good references)": f"/items/{top}",
                    "live stream, first event": f"/api/events?after_id={top - 10}&max_events=1",
                })
            for label, url in pages.items():
                median, worst, cpu, status = timed(client, url, args.repeat)
                print(f"{label:45s} median {median:6.1f} ms   max {worst:6.1f} ms   cpu {cpu:6.1f} ms   "
                      f"(HTTP {status})")
        store.close()


if __name__ == "__main__":
    main()
