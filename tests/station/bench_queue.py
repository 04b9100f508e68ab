"""Benchmark: the console's queue page with 100,000 items in SQLite (issue 8: must answer in < 300 ms).

    .venv/bin/python tests/station/bench_queue.py [--items 100000] [--repeat 20]

Fills a temporary SQLite file by bulk insert (one region per item, 5 % reviewed, two lines, three classes), logs
a reviewer in through the real app (FastAPI TestClient: routing, session check, template rendering included)
and times: the first queue page, a filtered page, a deep keyset page and the JSON API. Prints the median and
the worst of ``--repeat`` requests each. Not a unit test: timings depend on the machine.
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
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).parent))

from console_support import login, make_user  # noqa: E402

from edge.station.console import create_app  # noqa: E402
from edge.station.store import Store  # noqa: E402
from edge.station.tables import RegionRow, ReviewItemRow  # noqa: E402


def fill(store: Store, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = time.time()
    classes = ("crack", "spot", "good")
    reasons = ("uncertain", "unknown_frame", "sampled")
    batch = 10_000
    with store.engine.begin() as conn:
        for start in range(0, n, batch):
            items, regions = [], []
            for i in range(start + 1, min(n, start + batch) + 1):
                verdict = rng.choice(classes)
                items.append(dict(
                    id=i, frame_id=f"line-{i % 2 + 1}:cam0:b1:{i}", line_id=f"line-{i % 2 + 1}", source_id="cam0",
                    seq=i, captured_wall=now - (n - i) * 3.0, decided_wall=now - (n - i) * 3.0,
                    received_wall=now - (n - i) * 3.0, width=250, height=250, verdict=verdict,
                    class_scores={"good": 0.3, "crack": 0.4, "spot": 0.3}, anomaly_score=rng.random(),
                    anomaly_threshold=0.5, uncertainty=round(rng.random(), 3), reason=rng.choice(reasons),
                    pack_version="starter-0.1.0", profile_version="line-1/v3",
                    image_path=f"line-1/line-1:cam0:b1:{i}.jpg",
                    status="reviewed" if rng.random() < 0.05 else "pending"))
                regions.append(dict(item_id=i, x=30, y=38, w=62, h=18, area_px=1116, area_pct=1.8, peak=0.9,
                                    defect_class=verdict, location="upper-left",
                                    caption=f"{verdict}, upper-left, 62×18 px (1.8 %)", description="d",
                                    caption_score=0.3))
            conn.execute(insert(ReviewItemRow), items)
            conn.execute(insert(RegionRow), regions)


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
