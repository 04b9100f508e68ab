"""The review bench: an operator in a real browser works through a routed stream, one frame at a time and then with
look-alike groups, on a station with a full queue; keypresses and seconds per routed frame, and the time from a
keypress to the next item fully shown.

    lineside bench review [--console-items 100000] [--frames 96]

The station (``edge.bench.review_stream``) holds ``filler`` queued items and, on top, ``frames`` routed textile
frames with their embeddings, stored twice: grouping off (one by one) and on (the station's default). Debian's
Chromium, headless (Playwright, ``/usr/bin/chromium``), plays an operator who knows each frame's true answer:

- one by one: ``n`` opens the first item; on every item the answer's key (``a``, ``r``, or ``l`` and a digit);
- grouped: on a group page, arrows to each frame that does not belong and ``x`` to take it out, then the answer's
  key for the rest; a frame taken out opens next and gets its own answer; single items as above.

Each answer key is timed by the browser's own clock from its keydown to the next page fully shown (its frame, or
every image of a group's grid, decoded and painted), each take-out until the grid has changed: seconds per routed
frame are these, the machine's share of a frame's time. The operator looks at each page for ``LOOK_S`` before
answering (not counted): meanwhile the page fetches the next item ahead, as it would while a person looks.
Keypresses count every key the operator pressed, ``n`` and arrows included.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.bench.review_stream import CLASSES, StreamFrame, fill_station, station_copy, stream
from edge.config import StationConfig
from edge.station.store import GroupingPolicy, Store

Say = Callable[[str], None]
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "bench review horse staple"
LOOK_S = 0.6  # the operator looks at a page this long before answering (not counted)
# Installed in every page: the time of each keydown (kept across the navigation it causes) and the time the page
# was fully shown — its images decoded and a frame painted, or for a page the browser rendered ahead, the frame
# after it was put on screen. Both by the page's own clock, so the figure is the browser's, not the bench's.
PAGE_CLOCK = """
document.addEventListener("keydown", () => localStorage.setItem("bench.keydown", String(Date.now())), true);
function benchShown() {
  requestAnimationFrame(() => requestAnimationFrame(() => { window.benchShownAt = Date.now(); }));
}
function benchLoaded() {
  const imgs = Array.from(document.querySelectorAll(".frame img, #grid img"));
  Promise.all(imgs.map((i) => i.decode().catch(() => null))).then(() => {
    if (document.prerendering) document.addEventListener("prerenderingchange", benchShown, { once: true });
    else benchShown();
  });
}
if (document.readyState === "complete") benchLoaded(); else window.addEventListener("load", benchLoaded);
"""
SHOWN = "() => window.benchShownAt !== undefined"
LATENCY = """() => [window.benchShownAt - Number(localStorage.getItem('bench.keydown')),
  (performance.getEntriesByType('navigation')[0] || {}).activationStart > 0]"""


def _keys(frame: StreamFrame) -> list[str]:
    """The operator's keys for a frame's (or a group's) answer."""
    if frame.truth == frame.verdict:
        return ["a"]
    if frame.truth == "good":
        return ["r"]
    return ["l", str(list(CLASSES).index(frame.truth) + 1)]


class Operator:
    """Drives one logged-in page through the queue; counts keys, times each answer to the next page shown."""

    def __init__(self, page: Any, console: str, frames: dict[int, StreamFrame]) -> None:
        self.page, self.console, self.frames = page, console, frames
        self.keys = 0
        self.answered = 0
        self.latencies_ms: list[float] = []
        self.rendered_ahead = 0  # answers whose next page the browser had rendered ahead
        self.busy_s = 0.0  # the machine's time: each answer and take-out until its page was updated
        self.groups: list[int] = []

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.keys += 1

    def answer(self, keys: list[str], count: int) -> None:
        """Press an answer's keys after looking at the page; the last key is timed, by the browser's clock, until
        the next page is fully shown."""
        self.page.wait_for_timeout(LOOK_S * 1000)
        for key in keys[:-1]:
            self.press(key)
        before = self.page.url
        self.press(keys[-1])
        self.page.wait_for_url(lambda url: url != before, wait_until="commit")
        self.page.wait_for_function(SHOWN)
        latency, ahead = self.page.evaluate(LATENCY)
        self.latencies_ms.append(float(latency))
        self.rendered_ahead += bool(ahead)
        self.busy_s += latency / 1000
        self.answered += count

    def run(self, total: int) -> None:
        self.page.goto(self.console + "/")
        self.press("n")
        self.page.wait_for_url(lambda url: url != self.console + "/", wait_until="commit")
        self.page.wait_for_function(SHOWN)
        while self.answered < total:
            url = self.page.url
            if "/groups/" in url:
                self.group()
            elif "/items/" in url:
                item_id = int(url.split("/items/")[1].split("?")[0])
                if item_id not in self.frames:
                    break  # past the stream: the filler's items
                self.answer(_keys(self.frames[item_id]), 1)
            else:
                break

    def group(self) -> None:
        ids = [int(i) for i in self.page.eval_on_selector_all("#grid .cell", "cs => cs.map(c => c.dataset.itemId)")]
        frames = [self.frames[i] for i in ids]
        majority = Counter(f.truth for f in frames).most_common(1)[0][0]
        odd = [i for i, f in zip(ids, frames, strict=True) if f.truth != majority]
        self.groups.append(len(ids))
        at, remaining = 0, list(ids)
        for item_id in odd:  # arrows to the frame, x takes it out (the selection stays at its place)
            target = remaining.index(item_id)
            for _ in range(abs(target - at)):
                self.press("ArrowRight" if target > at else "ArrowLeft")
            started = time.perf_counter()
            self.press("x")
            self.page.wait_for_function(f"document.querySelectorAll('#grid .cell').length === {len(remaining) - 1}")
            self.busy_s += time.perf_counter() - started
            remaining.remove(item_id)
            at = min(target, len(remaining) - 1)
        first = next(f for f in frames if f.truth == majority)
        self.answer(_keys(first), len(remaining))


def _run_station(cfg: StationConfig) -> tuple[str, threading.Event, threading.Thread]:
    from edge.station.server import run_station

    stop, ready, urls = threading.Event(), threading.Event(), []

    def on_ready(console: str, _ingest: str) -> None:
        urls.append(console)
        ready.set()

    thread = threading.Thread(target=run_station, args=(cfg, stop, on_ready), name="bench-station", daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("review bench: the station did not start within 60 s")
    return urls[0], stop, thread


def _session(browser: Any, folder: Path, url: str, images: Path, frames: dict[str, StreamFrame],
             grouping: GroupingPolicy, say: Say, label: str) -> dict[str, Any]:
    from edge.station.users import add_user

    store = Store(url, images, grouping)
    try:
        add_user(store, "bench", PASSWORD, "reviewer")
        by_id = {item.id: frames[item.frame_id] for item in store.queue.list_items(None, 100_000)
                 if item.frame_id in frames}
    finally:
        store.close()
    cfg = StationConfig(ingest_bind="tcp://127.0.0.1:0", http_port=0, database_url=url, storage_dir=images,
                        group_distance=grouping.distance, wal_checkpoint_idle_s=0)
    console, stop, thread = _run_station(cfg)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 860})
        context.add_init_script(PAGE_CLOCK)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(console + "/login")
        page.fill("#username", "bench")
        page.fill("#password", PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(console + "/")
        operator = Operator(page, console, by_id)
        say(f"review: {label}: answering {len(by_id)} routed frames in Chromium …")
        operator.run(len(by_id))
        seconds = operator.busy_s
        page.context.close()
    finally:
        stop.set()
        thread.join(30)
    store = Store(url, images, grouping)
    try:  # what the database holds: a review per routed frame, none twice
        reviewed_once = sum(len(store.queue.get_item(i).reviews) == 1 for i in by_id)  # type: ignore[union-attr]
    finally:
        store.close()
    n = max(operator.answered, 1)
    lat = sorted(operator.latencies_ms)
    return {"frames": operator.answered, "keys": operator.keys, "keys_per_frame": round(operator.keys / n, 3),
            "seconds_per_frame": round(seconds / n, 3), "answers": len(lat),
            "rendered_ahead": operator.rendered_ahead, "reviewed_once": reviewed_once,
            "next_shown_median_ms": round(statistics.median(lat), 1) if lat else None,
            "next_shown_p90_ms": round(lat[int(0.9 * (len(lat) - 1))], 1) if lat else None,
            "groups": operator.groups}


def bench_review(pack_dir: Path, frames: int = 96, filler: int = 100_000, say: Say = lambda _m: None,
                 ) -> dict[str, Any]:
    """One by one vs grouped, on a station with ``filler`` queued items below ``frames`` routed frames."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"review bench: {CHROMIUM} is missing (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise RuntimeError(f"review bench needs the dev extra (playwright): {exc}") from None
    import logging

    for name in ("uvicorn", "uvicorn.error", "edge.station"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lineside-bench-review-") as tmp:
        root = Path(tmp)
        say(f"review: filling a station with {filler:,} queued items …")
        fill_station(root / "filled.db", root / "filled-images", filler)
        say(f"review: {frames} routed textile frames with their embeddings …")
        items = stream(frames, pack_dir)
        truth = {f.frame_id: f for _, _, f in items}
        result: dict[str, Any] = {"review_frames": len(items), "review_queue_items": filler + len(items)}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
            try:
                for label, policy in (("single", GroupingPolicy(distance=0)), ("grouped", GroupingPolicy())):
                    url, images = station_copy(root / "filled.db", root / label, items, policy)
                    got = _session(browser, root / label, url, images, truth, policy, say, label)
                    result.update({f"review_{label}_{k}": v for k, v in got.items()})
            finally:
                browser.close()
    single, grouped = result["review_single_keys_per_frame"], result["review_grouped_keys_per_frame"]
    result["review_keys_ratio"] = round(grouped / single, 3) if single else None
    result["review_next_shown_median_ms"] = result["review_single_next_shown_median_ms"]
    return result
