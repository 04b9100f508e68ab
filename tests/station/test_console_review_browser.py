"""Reviewing in a real browser: heatmap and good references, box editing and comments with keyboard and mouse, live
arrival of an item sent over ZeroMQ, second review by a different reviewer, the stats page.

Same rules as test_console_browser.py: Debian's /usr/bin/chromium, skipped on a workstation without it, FAILS when
``CI`` is set. The frames are drawn here (a textured grey with a dark scratch and spot) with their anomaly heatmaps
(32×32, hot on the scratch), so the boxes and the heatmap are known exactly.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.config import StationConfig
from edge.station.store import Store
from edge.station.training_export import ask_again
from edge.station.users import add_user
from edge.transport.schema import HEATMAP_Z_MAX, Region, ReviewItem
from tests.station.console_support import PASSWORD, TEST_OUTPUT, browser_login, running_station, send_items
from tests.station.frames_support import SCRATCH, SPOT, defect_jpeg, woven

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
OUT = TEST_OUTPUT
VIEWPORT = {"width": 1400, "height": 860}

CLASSES = {"good": 0.25, "scratch": 0.45, "spot": 0.30}  # keys 1 good, 2 scratch, 3 spot


def _frame(seed: int) -> bytes:
    return defect_jpeg(woven(seed))


def _heatmap() -> str:
    """A 32×32 map as the daemon sends it: 9 σ on the scratch (grid cell ≈ (9, 9)), 0 elsewhere."""
    yy, xx = np.mgrid[0:32, 0:32]
    z = 9.0 * np.exp(-((xx - 9.5) ** 2 + (yy - 9) ** 2) / 6.0)
    ok, png = cv2.imencode(".png", np.round(np.clip(z / HEATMAP_Z_MAX, 0, 1) * 255).astype(np.uint8))
    assert ok
    return base64.b64encode(png.tobytes()).decode("ascii")


def _item(seq: int, verdict: str, uncertainty: float, regions: list[Region], line: str = "line-1") -> ReviewItem:
    now = time.time()
    return ReviewItem(frame_id=f"{line}:cam0:b9:{seq}", line_id=line, source_id="cam0", seq=seq,
                      captured_wall=now - 60 + seq, decided_wall=now - 60 + seq, width=250, height=250,
                      verdict=verdict, class_scores=CLASSES, anomaly_score=0.7, anomaly_threshold=0.5,
                      uncertainty=uncertainty, regions=regions, pack_version="starter-0.1.0",
                      profile_version=f"{line}/v3", heatmap_png=_heatmap())


def _config(tmp_path: Path, **over: Any) -> StationConfig:
    return StationConfig(ingest_bind="tcp://127.0.0.1:0", http_host="127.0.0.1", http_port=0,
                         database_url=f"sqlite:///{tmp_path / 'station.db'}", storage_dir=tmp_path / "images",
                         **over)


def _accounts(cfg: StationConfig, *names: str) -> None:
    store = Store(cfg.database_url, cfg.storage_dir)
    try:
        for name in names:
            add_user(store, name, PASSWORD, "reviewer")
    finally:
        store.close()


def _page(browser: Any) -> Any:
    page = browser.new_context(viewport=VIEWPORT).new_page()  # a context each: separate cookies and storage
    page.set_default_timeout(15_000)
    return page


_BOX = re.compile(r"(\w+) (\d+)×(\d+) at (\d+), (\d+)")


def _boxes(page: Any) -> list[tuple[str, int, int, int, int]]:
    """The editor's boxes as the side list shows them: (class, x, y, w, h)."""
    out = []
    for text in page.locator("#box-list li").all_inner_texts():
        m = _BOX.search(text)
        assert m, text
        out.append((m[1], int(m[4]), int(m[5]), int(m[2]), int(m[3])))
    return out


def test_keyboard_review_with_heatmap_references_box_editing_and_a_comment(tmp_path, browser):
    from playwright.sync_api import expect

    cfg = _config(tmp_path)
    with running_station(cfg) as (console, ingest):
        _accounts(cfg, "ana")
        reference = _item(1, "scratch", 0.1, [SCRATCH])
        items = [_item(2, "scratch", 0.9, [SCRATCH, SPOT]), _item(3, "spot", 0.7, [SPOT]),
                 _item(4, "scratch", 0.5, [SCRATCH]), reference]
        send_items(ingest, [(item, _frame(i)) for i, item in enumerate(items)])
        store = Store(cfg.database_url, cfg.storage_dir)
        try:
            ref_id = store.queue.page(_all(), None, limit=10).items[-1].id
            store.reviews.add(ref_id, "reject", "root")  # a reviewed-good frame of line-1: the reference
        finally:
            store.close()

        page = _page(browser)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        browser_login(page, console, "ana")
        expect(page.locator("#queue tr.row")).to_have_count(3)
        page.keyboard.press("Enter")
        page.wait_for_url("**/items/1")

        # the good reference of the line beside the frame; g hides and shows it
        refs = page.locator("#refs")
        expect(refs.locator("a.ref")).to_have_count(1)
        expect(refs.locator("a.ref")).to_have_attribute("href", f"/items/{ref_id}")
        page.keyboard.press("g")
        expect(refs).to_be_hidden()
        page.keyboard.press("g")
        expect(refs).to_be_visible()

        # h: the heatmap, coloured and stretched over the frame; hot (opaque) on the scratch, clear elsewhere
        heat = page.locator("#heatmap")
        expect(heat).to_be_hidden()
        page.keyboard.press("h")
        expect(heat).to_be_visible()
        expect(page.locator("#heatmap-state")).to_have_text("on")
        expect(page.locator("#heat-legend")).to_be_visible()
        page.wait_for_selector("#heatmap[data-ready='fill']")
        frame_box, heat_box = page.locator(".frame img").bounding_box(), heat.bounding_box()
        assert heat_box["width"] == pytest.approx(frame_box["width"], abs=1)
        assert heat_box["height"] == pytest.approx(frame_box["height"], abs=1)
        alpha = page.evaluate("""() => { const c = document.getElementById('heatmap').getContext('2d');
            return [c.getImageData(9, 9, 1, 1).data[3], c.getImageData(28, 28, 1, 1).data[3]]; }""")
        assert alpha[0] > 150 and alpha[1] == 0, alpha
        # ] and [ change its opacity; h again draws contour lines instead, which leave the scratch's pixels visible
        expect(page.locator("#heat-opacity")).to_have_text("80 %")
        page.keyboard.press("]")
        expect(page.locator("#heat-opacity")).to_have_text("90 %")
        page.keyboard.press("]")
        page.keyboard.press("]")
        expect(page.locator("#heat-opacity")).to_have_text("100 %")
        page.wait_for_function("document.getElementById('heatmap').getContext('2d')"
                               ".getImageData(9, 9, 1, 1).data[3] > 230")
        page.keyboard.press("[")
        page.keyboard.press("h")
        expect(page.locator("#heatmap-state")).to_have_text("contours")
        page.wait_for_selector("#heatmap[data-ready='contours']")
        lines = page.evaluate("""() => { const c = document.getElementById('heatmap'); const ctx = c.getContext('2d');
            const d = ctx.getImageData(0, 0, c.width, c.height).data; let drawn = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) drawn++;
            return [c.width, drawn, ctx.getImageData(9 * 8 + 4, 9 * 8 + 4, 1, 1).data[3]]; }""")
        assert lines[0] == 256 and 0 < lines[1] < 256 * 256 * 0.2 and lines[2] == 0, lines  # the hot centre: clear
        page.screenshot(path=str(OUT / "console-item-contours.png"))
        page.keyboard.press("h")
        expect(page.locator("#heatmap-state")).to_have_text("off")
        expect(heat).to_be_hidden()
        page.keyboard.press("h")
        page.wait_for_selector("#heatmap[data-ready='fill']")
        page.keyboard.press("o")  # boxes off and on again, independent of the heatmap
        expect(page.locator("svg.overlay")).to_be_hidden()
        page.keyboard.press("o")
        expect(page.locator("svg.overlay")).to_be_visible()

        # boxes with the keyboard: Tab selects, arrows move (3 px = 1 % of 250), Shift+arrows resize, Delete
        assert _boxes(page) == [("scratch", 36, 56, 78, 33), ("spot", 169, 159, 22, 22)]
        page.keyboard.press("Tab")
        expect(page.locator("g.region.sel")).to_have_count(1)
        expect(page.locator("g.region.sel circle.handle")).to_have_count(4)
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("Shift+ArrowDown")
        page.keyboard.press("Tab")
        page.keyboard.press("Delete")
        assert _boxes(page) == [("scratch", 42, 56, 78, 36)]
        # d then Enter: a new box in the middle of the view, of the model's class; 3 makes it a spot
        page.keyboard.press("d")
        page.keyboard.press("Enter")
        page.keyboard.press("3")
        assert _boxes(page) == [("scratch", 42, 56, 78, 36), ("spot", 100, 100, 50, 50)]

        # ... and with the mouse: drag the selected box, then its lower-right corner
        rect = page.locator("g.region.sel rect.box").bounding_box()
        scale = frame_box["width"] / 250  # screen px per frame px
        page.mouse.move(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
        page.mouse.down()
        page.mouse.move(rect["x"] + rect["width"] / 2 + 20 * scale, rect["y"] + rect["height"] / 2 + 10 * scale,
                        steps=5)
        page.mouse.up()
        corner = page.locator('g.region.sel circle[data-handle="se"]').bounding_box()
        page.mouse.move(corner["x"] + corner["width"] / 2, corner["y"] + corner["height"] / 2)
        page.mouse.down()
        page.mouse.move(corner["x"] + corner["width"] / 2 + 10 * scale, corner["y"] + corner["height"] / 2,
                        steps=5)
        page.mouse.up()
        moved = _boxes(page)[1]
        assert moved[0] == "spot" and moved[1:] == pytest.approx((120, 110, 60, 50), abs=2), moved
        # draw one more with the mouse, then take it back with z
        page.keyboard.press("d")
        page.mouse.move(frame_box["x"] + 200 * scale, frame_box["y"] + 20 * scale)
        page.mouse.down()
        page.mouse.move(frame_box["x"] + 240 * scale, frame_box["y"] + 50 * scale, steps=5)
        page.mouse.up()
        drawn = _boxes(page)[-1]
        assert drawn[0] == "scratch" and drawn[1:] == pytest.approx((200, 20, 40, 30), abs=2), drawn
        page.keyboard.press("z")
        assert len(_boxes(page)) == 2
        expect(page.locator("#boxes-source")).to_contain_text("edited by you")

        # c: a comment; Esc gives the keys back
        page.keyboard.press("c")
        expect(page.locator("#comment")).to_be_focused()
        page.keyboard.type("scratch continues under the label")
        page.keyboard.press("Escape")
        expect(page.locator("#comment")).not_to_be_focused()
        page.keyboard.press("?")
        expect(page.locator("#help")).to_contain_text("anomaly heatmap: filled, then contour lines")
        expect(page.locator("#help")).to_contain_text("draw a box")
        page.keyboard.press("Escape")
        expect(page.locator("#help")).to_be_hidden()
        page.set_viewport_size({"width": 1400, "height": 1040})  # room for the good references under the frame
        page.screenshot(path=str(OUT / "console-item-review.png"))
        final_boxes = _boxes(page)

        page.keyboard.press("a")  # accept, with the edited boxes and the comment
        page.wait_for_url("**/items/2")
        expect(page.locator("#heatmap")).to_be_visible()  # the overlays chosen stay on for the next item
        page.keyboard.press("r")  # reject: the spot item is good; no box edited, the model's boxes stay
        page.wait_for_url("**/items/3")
        page.keyboard.press("l")
        page.keyboard.press("3")  # relabel the scratch item as a spot
        page.wait_for_url(console + "/")
        expect(page.locator(".empty")).to_contain_text("Queue is empty")
        assert errors == []

    if os.environ.get("LINESIDE_UPDATE_DOCS") == "1":
        shutil.copyfile(OUT / "console-item-review.png", REPO / "docs" / "console-item.png")

    store = Store(cfg.database_url, cfg.storage_dir)
    try:
        first, second, third = (store.queue.get_item(i) for i in (1, 2, 3))
        assert first is not None and second is not None and third is not None
        review = first.reviews[-1]
        assert (review.decision, review.final_verdict, review.comment) == (
            "accept", "scratch", "scratch continues under the label")
        assert [(b["class"], b["x"], b["y"], b["w"], b["h"]) for b in review.boxes or []] == final_boxes
        assert [(r.x, r.y, r.defect_class) for r in first.regions] == [(36, 56, "scratch"), (169, 159, "spot")]
        assert second.reviews[-1].boxes is None and second.reviews[-1].final_verdict == "good"
        assert third.reviews[-1].final_verdict == "spot"
        audit = next(e for e in store.audit.recent(item_id=1) if e.action == "review")
        assert [b["x"] for b in audit.before["boxes"]] == [36, 169]  # the model's, which stood before
        assert audit.after["boxes"] == review.boxes
    finally:
        store.close()


def _all() -> Any:
    from edge.station.store import QueueFilter

    return QueueFilter(status="all")


def test_an_item_sent_over_zeromq_is_announced_on_the_open_queue(tmp_path, browser):
    from playwright.sync_api import expect

    cfg = _config(tmp_path)
    with running_station(cfg) as (console, ingest):
        _accounts(cfg, "ana")
        send_items(ingest, [(_item(1, "scratch", 0.8, [SCRATCH]), _frame(1)),
                            (_item(2, "spot", 0.6, [SPOT]), _frame(2))])
        page = _page(browser)
        browser_login(page, console, "ana")
        other = page.context.new_page()  # same user, a queue filtered to another line: must stay quiet
        other.goto(console + "/?line=line-9")
        rows = page.locator("#queue tr.row")
        expect(rows).to_have_count(2)
        page.keyboard.press("j")
        expect(rows.nth(1)).to_have_class("row sel")
        expect(page.locator("#arrivals")).to_be_hidden()

        send_items(ingest, [(_item(3, "scratch", 0.95, [SCRATCH]), _frame(3))])  # a real edge-side DEALER
        expect(page.locator("#arrivals")).to_be_visible(timeout=10_000)
        expect(page.locator("#arrivals")).to_contain_text("1 new item — press r to show")
        expect(page.locator("#pending-count")).to_have_text("3")
        expect(rows).to_have_count(2)  # nothing moved under the reviewer's selection
        expect(rows.nth(1)).to_have_class("row sel")
        assert page.title().startswith("(1 new)")
        page.screenshot(path=str(OUT / "console-queue-live.png"))
        time.sleep(2.5)  # both streams poll once a second
        expect(other.locator("#arrivals")).to_be_hidden()

        page.keyboard.press("r")
        expect(rows).to_have_count(3)
        expect(rows.nth(0)).to_contain_text("0.95")
        expect(page.locator("#arrivals")).to_be_hidden()
        page.screenshot(path=str(OUT / "console-queue.png"))

        # an answer sent back for another look (`lineside train --recheck`, from outside the station): an old id,
        # announced as asked again, not as an arrival
        store = Store(cfg.database_url, cfg.storage_dir)
        try:
            store.reviews.add(2, "accept", "ben", None, 3.0)
        finally:
            store.close()
        page.keyboard.press("r")
        expect(rows).to_have_count(2)
        assert ask_again(cfg, [2], "lineside train") == [2]
        expect(page.locator("#arrivals")).to_be_visible(timeout=10_000)
        expect(page.locator("#arrivals")).to_contain_text("1 asked again — press r to show")
        expect(page.locator("#pending-count")).to_have_text("3")
        page.keyboard.press("r")
        expect(rows).to_have_count(3)
        expect(page.locator("#queue")).to_contain_text("asked again")


def test_second_review_goes_to_another_reviewer_and_the_stats_page_shows_agreement(tmp_path, browser):
    from playwright.sync_api import expect

    cfg = _config(tmp_path, second_review_fraction=1.0)
    with running_station(cfg) as (console, ingest):
        _accounts(cfg, "ana", "ben")
        send_items(ingest, [(_item(1, "scratch", 0.9, [SCRATCH]), _frame(1)),
                            (_item(2, "spot", 0.7, [SPOT]), _frame(2))])
        ana = _page(browser)
        browser_login(ana, console, "ana")
        ana.keyboard.press("n")
        ana.wait_for_url("**/items/1")
        ana.keyboard.press("a")  # scratch, yes
        ana.wait_for_url("**/items/2")
        ana.keyboard.press("r")  # the spot is nothing: good
        ana.wait_for_url(console + "/")
        expect(ana.locator(".empty")).to_be_visible()  # both wait for someone else now
        ana.goto(console + "/items/1")
        expect(ana.locator("#conflict")).to_contain_text("second review by someone other than you")

        ben = _page(browser)
        browser_login(ben, console, "ben")
        rows = ben.locator("#queue tr.row")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator(".badge")).to_have_text("second review")
        expect(rows.nth(0)).not_to_contain_text("by ana")  # blind: the first answer is not shown
        ben.keyboard.press("Enter")
        ben.wait_for_url("**/items/1")
        expect(ben.locator("#second-review")).to_be_visible()
        expect(ben.locator(".reviewed")).to_have_count(0)
        ben.keyboard.press("a")  # agrees with ana
        ben.wait_for_url("**/items/2")
        ben.keyboard.press("l")
        ben.keyboard.press("3")  # disagrees: a spot, not good
        ben.wait_for_url(console + "/")

        ben.goto(console + "/stats")
        expect(ben.locator("#second-pairs")).to_have_text("2")
        expect(ben.locator("#second-agree")).to_have_text("50.0 %")
        expect(ben.locator("#disagreements tbody tr")).to_have_count(1)
        expect(ben.locator("#disagreements")).to_contain_text("good by ana")
        expect(ben.locator("#reviewers")).to_contain_text("ana")
        expect(ben.locator("#reviewers")).to_contain_text("ben")
        expect(ben.locator("#stat-reviews")).to_have_text("4")
        expect(ben.locator('#agreement tr[data-verdict="scratch"] .rate')).to_contain_text("100.0 %")
        expect(ben.locator('#agreement tr[data-verdict="spot"] .rate')).to_contain_text("100.0 %")
        ben.screenshot(path=str(OUT / "console-stats.png"), full_page=True)

    store = Store(cfg.database_url, cfg.storage_dir)
    try:
        for item_id, answers in ((1, [("ana", "scratch", False), ("ben", "scratch", True)]),
                                 (2, [("ana", "good", False), ("ben", "spot", True)])):
            item = store.queue.get_item(item_id)
            assert item is not None and item.status == "reviewed" and item.second_review_of is None
            assert [(r.reviewer, r.final_verdict, r.second_review) for r in item.reviews] == answers
    finally:
        store.close()
