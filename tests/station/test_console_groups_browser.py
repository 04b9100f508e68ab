"""Reviewing look-alike frames together in a real browser: real textile frames with a global defect, their global
embeddings from the real starter pack, sent over ZeroMQ to the real station, which groups them; one reviewer takes
one frame out and answers the rest with one key while another reviewer never gets any of those frames.

Same rules as the other browser tests: Debian's /usr/bin/chromium, skipped on a workstation without it, FAILS when
``CI`` is set. ``LINESIDE_UPDATE_DOCS=1`` refreshes README's picture of a group (docs/console-group.png).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import pytest

from edge.config import StationConfig
from edge.datasets import textile_split
from edge.station.store import QueueFilter, Store
from edge.station.training_export import reviewed_frames
from edge.station.users import add_user
from edge.transport.schema import ReviewItem, embedding_b64
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder
from tests.conftest import PACK
from tests.station.console_support import PASSWORD, TEST_OUTPUT, browser_login, running_station, send_items

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
CLASSES = {"good": 0.3, "spot": 0.2, "texture": 0.5}  # relabel keys: 1 good, 2 spot, 3 texture


def _frames() -> list[tuple[ReviewItem, bytes]]:
    """Six textile test frames with a global defect (they look alike) and one good-looking frame with a spot."""
    encoder = ImageEncoder(load_pack(PACK), "cpu")
    test = textile_split("test")
    run = [p for p, label in test if label == "global"][:6]
    single = [p for p, label in test if label == "local"][0]
    now = time.time()
    out = []
    for seq, (path, verdict, uncertainty) in enumerate(
            [(p, "texture", 0.6 + i / 100) for i, p in enumerate(run)] + [(single, "spot", 0.4)], start=1):
        image = cv2.imread(str(path))
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        out.append((ReviewItem(
            frame_id=f"line-1:cam0:b5:{seq}", line_id="line-1", source_id="cam0", seq=seq, captured_wall=now - 60 + seq,
            decided_wall=now - 60 + seq, width=image.shape[1], height=image.shape[0], verdict=verdict,
            class_scores=CLASSES, anomaly_score=1.2, anomaly_threshold=1.0, uncertainty=uncertainty,
            pack_version="starter", profile_version="line-1/v1",
            embedding=embedding_b64(encoder.encode(image).global_)), jpeg.tobytes()))
    return out


def test_a_group_is_answered_with_one_key_after_taking_one_frame_out(tmp_path, browser):
    from playwright.sync_api import expect

    cfg = StationConfig(ingest_bind="tcp://127.0.0.1:0", http_host="127.0.0.1", http_port=0,
                        database_url=f"sqlite:///{tmp_path / 'station.db'}", storage_dir=tmp_path / "images")
    with running_station(cfg) as (console, ingest):
        store = Store(cfg.database_url, cfg.storage_dir)
        try:
            for name in ("ana", "ben"):
                add_user(store, name, PASSWORD, "reviewer")
            send_items(ingest, _frames())
            items = store.queue.pending(limit=20)
            run = sorted(i.id for i in items if i.verdict == "texture")
            single = next(i.id for i in items if i.verdict == "spot")
            group_id = store.queue.get_item(run[0]).group_id
            assert group_id is not None and {store.queue.get_item(i).group_id for i in run} == {group_id}

            ana = browser.new_context(viewport={"width": 1400, "height": 860}).new_page()
            ana.set_default_timeout(15_000)
            errors: list[str] = []
            ana.on("pageerror", lambda exc: errors.append(str(exc)))
            browser_login(ana, console, "ana")
            rows = ana.locator("#queue tr.row")
            expect(rows).to_have_count(2)  # the group and the single frame
            expect(rows.nth(0)).to_contain_text("6 look-alike")
            ana.keyboard.press("Enter")
            ana.wait_for_url(f"**/groups/{group_id}")
            cells = ana.locator("#grid .cell")
            expect(cells).to_have_count(6)
            ana.wait_for_function("Array.from(document.querySelectorAll('#grid img'))"
                                  ".every(i => i.complete && i.naturalWidth > 0)")

            # the group's frames are all ana's: ben's queue has only the single frame, and the group is refused him
            assert {store.queue.lease_of(i).username for i in run} == {"ana"}
            ben = browser.new_context(viewport={"width": 1400, "height": 860}).new_page()
            ben.set_default_timeout(15_000)
            browser_login(ben, console, "ben")
            expect(ben.locator("#queue tr.row")).to_have_count(1)
            expect(ben.locator("#queue tr.row")).to_have_attribute("data-item-id", str(single))
            ben.goto(f"{console}/groups/{group_id}")
            expect(ben.locator("#conflict")).to_contain_text("someone else")

            # ana selects the second frame and takes it out: five stay in the grid
            ana.keyboard.press("ArrowRight")
            odd = int(cells.nth(1).get_attribute("data-item-id"))
            ana.keyboard.press("x")
            expect(cells).to_have_count(5)
            expect(ana.locator("#group-size")).to_have_text("5")
            expect(ana.locator("#taken-out-list")).to_have_text(f"#{odd}")
            ana.screenshot(path=str(TEST_OUTPUT / "console-group.png"))
            if os.environ.get("LINESIDE_UPDATE_DOCS") == "1":
                shutil.copyfile(TEST_OUTPUT / "console-group.png", REPO / "docs" / "console-group.png")

            # one key answers the five; the frame taken out opens next, and is answered alone
            ana.keyboard.press("a")
            ana.wait_for_url(f"**/items/{odd}")
            ana.keyboard.press("l")
            ana.keyboard.press("2")  # relabel: spot
            ana.wait_for_url(f"{console}/items/{single}")  # then the next work: ben gave nothing back yet
            assert not errors, errors

            # one review and one review audit entry per frame; five answered as the group, one alone
            for item_id in run:
                item = store.queue.get_item(item_id)
                assert item.status == "reviewed" and len(item.reviews) == 1
                assert item.reviews[0].group_id == (None if item_id == odd else group_id)
                assert item.reviews[0].final_verdict == ("spot" if item_id == odd else "texture")
                audit = [e for e in store.audit.recent(200, item_id=item_id) if e.action == "review"]
                assert len(audit) == 1 and audit[0].username == "ana"
            assert sorted(f.item_id for f in reviewed_frames(store, "line-1")) == run  # retraining: each once
            assert store.queue.page(QueueFilter(), "ben").items == []  # the single frame is ana's now
        finally:
            store.close()
