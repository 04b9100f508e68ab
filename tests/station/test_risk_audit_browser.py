"""The risk audit in a real browser: sampled frames over ZeroMQ into the real station, reviewed, then a reviewer
logs in to headless Chromium and sees the red alarm banner, the amber warning and the per-line numbers.

Needs Debian's /usr/bin/chromium, like test_console_browser.py: skipped on a workstation without it, FAILS when
``CI`` is set.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import StationConfig
from edge.station.store import Store
from edge.station.users import add_user
from edge.tools.net import free_port
from edge.transport.schema import ReviewItem
from edge.uncertainty.risk import clopper_pearson
from tests.station.console_support import (
    BROWSER_ARGS,
    CHROMIUM,
    TEST_OUTPUT,
    need_chromium,
    running_station,
    send_items,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "correct horse battery"
OUT = TEST_OUTPUT


@pytest.fixture
def station(tmp_path: Path) -> Iterator[tuple[str, str, StationConfig]]:
    cfg = StationConfig(ingest_bind="tcp://127.0.0.1:0", http_host="127.0.0.1", http_port=0,
                        database_url=f"sqlite:///{tmp_path / 'station.db'}", storage_dir=tmp_path / "images",
                        audit_alpha=0.01, audit_alpha_by_line={"line-3": 0.05}, metrics_port=free_port())
    with running_station(cfg) as (console, ingest):
        yield console, ingest, cfg


def _jpeg() -> bytes:
    img = np.random.default_rng(0).integers(90, 170, (120, 160, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _sampled(line: str, count: int) -> list[ReviewItem]:
    """Frames the daemon decided "good" by itself and sent for the audit (reason "sampled")."""
    now = time.time()
    return [ReviewItem(frame_id=f"{line}:cam0:b1:{i}", line_id=line, source_id="cam0", seq=i, captured_wall=now,
                       decided_wall=now, width=160, height=120, verdict="good",
                       class_scores={"good": 0.97, "scratch": 0.02, "spot": 0.01}, anomaly_score=0.1,
                       anomaly_threshold=0.5, uncertainty=0.03, reason="sampled", pack_version="starter-0.1.0",
                       profile_version=f"{line}/v3") for i in range(count)]


def test_reviewer_sees_the_alarm_banner_and_the_audit_numbers(station):
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    console, ingest, cfg = station
    # line-1: 5 of 25 sampled "good" frames were defects → 20 %, 95 % CI 6.8–40.7 %, far above α = 1 %: alarm
    # line-2: 1 of 60 → 1.7 % > 1 % but the interval reaches 0.04 %: warning.  line-3: 1 of 40 at α = 5 %: ok
    plan = {"line-1": (25, 5), "line-2": (60, 1), "line-3": (40, 1)}
    for line, (count, _) in plan.items():
        send_items(ingest, [(item, _jpeg()) for item in _sampled(line, count)])
    store = Store(cfg.database_url, cfg.storage_dir)
    try:
        add_user(store, "ana", PASSWORD, "reviewer")
        items = store.queue.list_items(status=None, limit=1000)
        assert len(items) == sum(count for count, _ in plan.values())
        for line, (_, errors) in plan.items():
            for k, item in enumerate(sorted((i for i in items if i.line_id == line), key=lambda i: i.id)):
                if k < errors:
                    store.reviews.add(item.id, "relabel", "ben", defect_class="scratch")  # the daemon missed it
                else:
                    store.reviews.add(item.id, "accept", "ben")
    finally:
        store.close()

    OUT.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 860})
            page.set_default_timeout(15_000)
            page.goto(console + "/")
            page.wait_for_url("**/login?next=%2F")
            expect(page.locator("#audit-alarm")).to_have_count(0)  # nothing for the logged-out
            page.fill("#username", "ana")
            page.fill("#password", PASSWORD)
            page.keyboard.press("Enter")
            page.wait_for_url(console + "/")

            alarm = page.locator("#audit-alarm")
            expect(alarm).to_be_visible()
            expect(alarm).to_contain_text("line-1")
            expect(alarm).to_contain_text("20.0 %")
            expect(alarm).not_to_contain_text("line-2")
            assert page.eval_on_selector("#audit-alarm", "e => getComputedStyle(e).backgroundColor") == \
                "rgb(92, 21, 24)"  # red
            warning = page.locator("#audit-warning")
            expect(warning).to_be_visible()
            expect(warning).to_contain_text("line-2")
            assert page.eval_on_selector("#audit-warning", "e => getComputedStyle(e).backgroundColor") == \
                "rgb(74, 53, 8)"  # amber
            page.screenshot(path=str(OUT / "console-audit-banner.png"))

            page.click("#audit-alarm a")
            page.wait_for_url(console + "/audit")
            rows = page.locator("#risk-audit tbody tr")
            expect(rows).to_have_count(3)
            one = page.locator('#risk-audit tr[data-line="line-1"]')
            lower, upper = clopper_pearson(5, 25, 0.95)
            expect(one.locator(".audit-state")).to_have_text("ALARM")
            expect(one.locator(".rate")).to_have_text("20.00 %")
            expect(one.locator(".ci")).to_have_text(f"{100 * lower:.2f}–{100 * upper:.2f} %")
            expect(one.locator(".alpha")).to_have_text("1 %")
            expect(one).to_contain_text("25")
            expect(page.locator('#risk-audit tr[data-line="line-2"] .audit-state')).to_have_text("warning")
            three = page.locator('#risk-audit tr[data-line="line-3"]')
            expect(three.locator(".audit-state")).to_have_text("ok")
            expect(three.locator(".alpha")).to_have_text("5 %")
            page.screenshot(path=str(OUT / "console-audit.png"), full_page=True)

            data = page.evaluate("async () => (await fetch('/api/risk-audit')).json()")
            assert data["alarm"] == ["line-1"] and data["warning"] == ["line-2"]
        finally:
            chromium.close()

    # the same figures on the station's Prometheus endpoint, beside the ingest counters
    with urllib.request.urlopen(f"http://127.0.0.1:{cfg.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'lineside_audit_alarm{line="line-1"} 1.0' in metrics
    assert 'lineside_audit_alarm{line="line-2"} 0.0' in metrics
    assert 'lineside_audit_error_rate{line="line-1"} 0.2' in metrics
    assert 'lineside_audit_n{line="line-2"} 60.0' in metrics
    assert "lineside_station_ingest_total" in metrics
