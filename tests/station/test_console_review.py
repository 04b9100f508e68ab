"""Review work at the station without a browser: heatmaps on the wire and in the store, the operator's boxes and
comments (store, export, training read, audit), second reviews, good references, live arrivals (SSE) and stats."""

from __future__ import annotations

import base64
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from console_support import login, make_user
from fastapi.testclient import TestClient

from edge.config import StationConfig
from edge.station.console import create_app
from edge.station.stats import review_stats
from edge.station.store import LeaseConflict, QueueFilter, ReviewError, Store
from edge.station.store.reviews import MAX_BOXES, check_boxes, picked_for_second_review
from edge.station.training_export import reviewed_frames
from edge.transport.schema import (
    HEATMAP_Z_MAX,
    MAX_HEATMAP_CHARS,
    ReviewItem,
    WireError,
    decode_item,
    encode_item,
)

CLASSES = ["good", "crack", "spot"]


def _png(grid: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", grid.astype(np.uint8))
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


# ---- the heatmap on the wire, from the daemon, in the store ----

def test_heatmap_field_is_optional_bounded_and_must_be_a_png(make_item, jpeg):
    item = make_item()
    assert item.heatmap_png is None
    assert decode_item(encode_item(item, jpeg()))[0].heatmap_png is None  # older edges: nothing sent
    ok = make_item(heatmap_png=_png(np.zeros((32, 32))))
    assert decode_item(encode_item(ok, jpeg()))[0].heatmap_png == ok.heatmap_png
    header = json.loads(encode_item(ok, jpeg())[1])
    for bad, message in (("A" * (MAX_HEATMAP_CHARS + 4), "at most"), ("not base64!", "not base64"),
                         (base64.b64encode(b"GIF89a....").decode(), "not a PNG")):
        frames = [b"item", json.dumps({**header, "heatmap_png": bad}).encode(), jpeg()]
        with pytest.raises(WireError, match=f"heatmap_png.*{message}"):
            decode_item(frames)


def test_the_daemon_sends_the_anomaly_map_on_a_fixed_sigma_scale():
    from edge.capture.frame import Frame
    from edge.config import LineConfig
    from edge.inspect.inspector import Inspection
    from edge.inspect.review_item import review_item
    from edge.uncertainty.score import Uncertainty

    z = np.zeros((28, 28), np.float32)
    z[3, 4], z[10, 10], z[20, 5] = HEATMAP_Z_MAX / 2, 2 * HEATMAP_Z_MAX, -3.0  # half, beyond the top, below good
    result = Inspection(verdict="crack", class_scores={"good": 0.3, "crack": 0.7}, anomaly_score=1.0,
                        anomaly_threshold=0.5, regions=[], uncertainty=Uncertainty(value=0.4, source="baseline"),
                        anomaly_map=z)
    cfg = LineConfig(id="line-1", source={"kind": "folder", "path": "."})
    frame = Frame(source_id="cam0", seq=7, mono_ts=time.monotonic(), wall_ts=time.time(),
                  image=np.zeros((120, 160, 3), np.uint8), origin="test")
    item = review_item(cfg, frame, "line-1:cam0:b:7", result, ("pack", "profile"))
    assert item.heatmap_png is not None and len(item.heatmap_png) < 2000  # the map's grid, not the frame's
    grey = cv2.imdecode(np.frombuffer(base64.b64decode(item.heatmap_png), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (28, 28) and grey.dtype == np.uint8
    assert (grey[3, 4], grey[10, 10], grey[20, 5], grey[0, 0]) == (128, 255, 0, 0)
    assert ReviewItem.model_validate_json(item.model_dump_json()).heatmap_png == item.heatmap_png


def test_heatmaps_are_stored_by_add_item_and_add_items_and_served_on_the_item_only(store, make_item, jpeg):
    heat = _png(np.full((32, 32), 200))
    assert store.ingest.add_item(make_item(heatmap_png=heat), jpeg())
    assert store.ingest.add_items([(make_item(heatmap_png=heat), jpeg()), (make_item(), jpeg())]) == [True, True]
    assert [store.queue.get_item(i).heatmap_png for i in (1, 2, 3)] == [heat, heat, None]  # type: ignore[union-attr]
    page = store.queue.page(QueueFilter(), None)
    assert all(item.heatmap_png is None for item in page.items)  # the queue never reads them


# ---- the operator's boxes and comments ----

def test_check_boxes_clips_to_the_frame_and_refuses_what_is_not_a_box():
    assert check_boxes([{"x": -5, "y": 10.4, "w": 400, "h": 20, "class": "crack"}], 250, 200, CLASSES) == [
        {"x": 0, "y": 10, "w": 250, "h": 20, "class": "crack"}]
    assert check_boxes([], 250, 200, CLASSES) == []
    for raw, message in (({"x": 1}, "must be a list"), ([[1, 2, 3, 4]], "not an object"),
                         ([{"x": 1, "y": 1, "w": "wide", "h": 3, "class": "crack"}], "numbers"),
                         ([{"x": float("nan"), "y": 1, "w": 2, "h": 3, "class": "crack"}], "out of range"),
                         ([{"x": 1, "y": 1, "w": 0, "h": 3, "class": "crack"}], "no area"),
                         ([{"x": 1, "y": 1, "w": 2, "h": 3, "class": "good"}], "not a defect class"),
                         ([{"x": 1, "y": 1, "w": 2, "h": 3, "class": "dent"}], "not a defect class"),
                         ([{"x": 1, "y": 1, "w": 2, "h": 3, "class": "crack"}] * (MAX_BOXES + 1), "at most")):
        with pytest.raises(ReviewError, match=message):
            check_boxes(raw, 250, 200, CLASSES)


def test_operator_boxes_and_comment_are_saved_exported_and_audited(store, make_item, jpeg, region):
    store.ingest.add_item(make_item(regions=[region(), region(x=150, y=160, w=40, h=30, defect_class="spot")]), jpeg())
    store.ingest.add_item(make_item(), jpeg())
    mine = [{"x": 10, "y": 20, "w": 30, "h": 40, "class": "spot"}]
    with pytest.raises(ReviewError, match="good part has no defect boxes"):
        store.reviews.add(2, "reject", "ana", boxes=mine)
    with pytest.raises(ReviewError, match="at most 2000"):
        store.reviews.add(2, "reject", "ana", comment="x" * 2001)
    saved = store.reviews.add(1, "accept", "ana", boxes=mine, comment="  two spots, one boxed  ")
    assert (saved.boxes, saved.comment) == (mine, "two spots, one boxed")
    store.reviews.add(2, "reject", "ana", boxes=[], comment="")  # deleting every box of a good part is fine
    item = store.queue.get_item(1)
    assert item is not None and [(r.x, r.defect_class) for r in item.regions] == [(30, "crack"), (150, "spot")]
    entry = next(e for e in store.audit.recent(item_id=1) if e.action == "review")
    assert [b["x"] for b in entry.before["boxes"]] == [30, 150] and entry.after["boxes"] == mine
    assert entry.after["review"]["comment"] == "two spots, one boxed"

    from edge.station.export import write_zip

    for fmt in ("coco", "jsonl"):
        dest = store.storage_dir.parent / f"export.{fmt}.zip"
        assert write_zip(store, fmt, dest) == 2
        with zipfile.ZipFile(dest) as zf:
            if fmt == "coco":
                coco = json.loads(zf.read("annotations.json"))
                cats = {c["id"]: c["name"] for c in coco["categories"]}
                assert [(cats[a["category_id"]], a["bbox"], a["source"]) for a in coco["annotations"]] == [
                    ("spot", [10, 20, 30, 40], "operator")]
                assert [img["comment"] for img in coco["images"]] == ["two spots, one boxed", None]
            else:
                recs = [json.loads(line) for line in zf.read("items.jsonl").decode().splitlines()]
                assert recs[0]["boxes"][0]["source"] == "operator" and recs[0]["comment"] == "two spots, one boxed"
                assert recs[1]["boxes"] == []
    frames = {f.item_id: f for f in reviewed_frames(store, "line-1")}
    assert frames[1].operator_boxes == mine and frames[1].comment == "two spots, one boxed"
    assert len(frames[1].regions) == 2 and frames[2].operator_boxes == []


def test_review_posts_boxes_as_a_form_field_or_json(app_client, store, make_item, jpeg):
    client, _ = app_client
    for _ in range(3):
        store.ingest.add_item(make_item(), jpeg())
    json_accept = {"Accept": "application/json"}
    box = {"x": 5, "y": 6, "w": 7, "h": 8, "class": "crack"}
    r = client.post("/items/1/review", data={"decision": "accept", "boxes": json.dumps([box]), "comment": "c"},
                    headers=json_accept)
    assert r.status_code == 200 and r.json()["review"]["boxes"] == [box]
    r = client.post("/items/2/review", json={"decision": "accept", "boxes": [box], "comment": "j"},
                    headers=json_accept)
    assert r.status_code == 200 and r.json()["review"]["comment"] == "j"
    r = client.post("/items/3/review", data={"decision": "accept", "boxes": "[{"}, headers=json_accept)
    assert r.status_code == 422 and "boxes is not JSON" in r.json()["detail"]
    r = client.post("/items/3/review", data={"decision": "accept", "boxes": ""}, headers=json_accept)
    assert r.status_code == 200 and r.json()["review"]["boxes"] is None  # untouched: the model's stand
    page = client.get("/items/1").text
    assert "edited by ana" in page and '"source": "operator"' in page


# ---- second review ----

def test_picked_for_second_review_is_a_stable_fraction():
    ids = [f"line-1:cam0:b1:{i}" for i in range(20_000)]
    assert not any(picked_for_second_review(i, 0.0) for i in ids)
    assert all(picked_for_second_review(i, 1.0) for i in ids)
    share = sum(picked_for_second_review(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [picked_for_second_review(i, 0.1) for i in ids[:50]] == [picked_for_second_review(i, 0.1) for i in ids[:50]]


def test_a_sampled_item_goes_back_to_the_queue_for_another_reviewer(store, make_item, jpeg):
    store.ingest.add_item(make_item(uncertainty=0.9), jpeg())
    store.ingest.add_item(make_item(uncertainty=0.5), jpeg())
    first = store.reviews.add(1, "accept", "ana", second_review_fraction=1.0)
    assert not first.second_review
    item = store.queue.get_item(1)
    assert item is not None and (item.status, item.second_review_of) == ("pending", "ana")
    assert [i.id for i in store.queue.page(QueueFilter(), "ana").items] == [2]  # not for ana ...
    assert [i.id for i in store.queue.page(QueueFilter(), "ben").items] == [1, 2]  # ... for anyone else
    assert store.queue.claim_next("ana", 5) == 2 and store.queue.peek_next("ana", exclude=2) is None
    with pytest.raises(LeaseConflict, match="second review by someone other than you"):
        store.queue.claim(1, "ana", 5)
    with pytest.raises(ReviewError, match="someone other than you"):
        store.reviews.add(1, "reject", "ana")
    assert store.queue.claim_next("ben", 5) == 1
    second = store.reviews.add(1, "reject", "ben", second_review_fraction=1.0)
    assert second.second_review
    item = store.queue.get_item(1)
    assert item is not None and (item.status, item.second_review_of) == ("reviewed", None)
    assert [r.final_verdict for r in item.reviews] == ["crack", "good"]  # the latest answer stands

    # ben takes his back: the item waits for a second answer again, leased to ben
    assert store.reviews.undo_last("ben", 5) == 1
    item = store.queue.get_item(1)
    assert item is not None and (item.status, item.second_review_of) == ("pending", "ana")
    assert store.queue.lease_of(1) is not None and store.queue.lease_of(1).username == "ben"  # type: ignore[union-attr]
    store.queue.release(1, "ben")
    # ana takes her first answer back: an ordinary pending item again
    assert store.reviews.undo_last("ana", 5) == 1
    item = store.queue.get_item(1)
    assert item is not None and (item.status, item.second_review_of, item.reviews) == ("pending", None, [])
    # a correction of a reviewed item is no new first answer: it is never sampled again
    store.reviews.add(1, "accept", "ana")
    store.reviews.add(1, "reject", "ana", second_review_fraction=1.0)
    assert store.queue.get_item(1).status == "reviewed"  # type: ignore[union-attr]


def test_the_second_reviewer_does_not_see_the_first_answer(app_client, store, make_item, jpeg):
    client, app = app_client
    app.state.console.second_review_fraction = 1.0
    store.ingest.add_item(make_item(), jpeg())
    store.reviews.add(1, "reject", "ben", second_review_fraction=1.0)
    queue = client.get("/").text
    assert "second review" in queue and "by ben" not in queue
    page = client.get("/items/1").text
    assert 'id="second-review"' in page and "ben" not in page.split('id="second-review"')[1].split("</p>")[0]
    assert 'class="reviewed"' not in page


# ---- good references ----

def test_good_references_are_the_latest_good_answers_of_the_line(store, make_item, jpeg):
    for line in ("line-1", "line-1", "line-1", "line-2", "line-1", "line-1"):
        store.ingest.add_item(make_item(line_id=line, frame_id=f"{line}:cam0:b:{time.monotonic_ns()}"), jpeg())
    t = time.time()
    store.reviews.add(1, "reject", "ana", now=t)  # good
    store.reviews.add(2, "reject", "ana", now=t + 1)  # good, later overruled
    store.reviews.add(3, "accept", "ana", now=t + 2)  # crack
    store.reviews.add(4, "reject", "ana", now=t + 3)  # good, other line
    store.reviews.add(5, "reject", "ben", now=t + 4)  # good
    store.reviews.add(2, "relabel", "ben", "spot", now=t + 5)
    refs = store.queue.good_references("line-1", limit=4)
    assert [(r.item_id, r.reviewer) for r in refs] == [(5, "ben"), (1, "ana")]
    assert [r.item_id for r in store.queue.good_references("line-1", exclude=5)] == [1]
    assert [r.item_id for r in store.queue.good_references("line-1", limit=1)] == [5]
    assert [r.item_id for r in store.queue.good_references("line-2")] == [4]


# ---- live arrivals ----

def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "arrivals":
            out.append({"id": fields["id"], **json.loads(fields["data"])})
    return out


def test_live_arrivals_stream_counts_new_items_under_the_filter(app_client, store, make_item, jpeg):
    client, _ = app_client
    store.ingest.add_item(make_item(), jpeg())
    store.ingest.add_item(make_item(line_id="line-2", frame_id="line-2:cam0:b:1"), jpeg())
    r = client.get("/api/events", params={"after_id": 0, "max_events": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.startswith("retry: ")
    audit = store.queue.watermarks()[1]  # the login's row: the second watermark, here only carried along
    assert _events(r.text) == [{"id": f"2/{audit}", "max_id": 2, "new": 2, "asked_again": 0, "pending": 2}]
    r = client.get("/api/events", params={"after_id": 0, "max_events": 1, "line": "line-2"})
    assert _events(r.text)[0]["new"] == 1
    r = client.get("/api/events", params={"after_id": 0, "max_events": 1, "status": "reviewed"})
    assert _events(r.text)[0]["new"] == 0
    # a reconnect sends the last id it saw: nothing is counted twice
    started = time.monotonic()
    r = client.get("/api/events", params={"after_id": 0, "timeout_s": 1.2}, headers={"Last-Event-ID": "2"})
    assert _events(r.text) == [] and 1.0 < time.monotonic() - started < 5
    # an item arriving while the stream is open
    import threading

    threading.Timer(0.3, lambda: store.ingest.add_item(make_item(), jpeg())).start()
    r = client.get("/api/events", params={"after_id": 2, "max_events": 1, "timeout_s": 10})
    assert _events(r.text) == [{"id": f"3/{audit}", "max_id": 3, "new": 1, "asked_again": 0, "pending": 3}]
    assert client.get("/api/events", params={"timeout_s": 0}).status_code == 422
    assert client.get("/api/events", params={"timeout_s": 10_000}).status_code == 422


def test_live_stream_announces_items_asked_again_under_the_filter(app_client, store, make_item, jpeg):
    """`lineside train --recheck` sends reviewed items back to the queue with their old ids: the open queue hears
    of them as "asked again", not as arrivals, only under its filter, once, and not the ones asked before it
    opened."""
    client, _ = app_client
    for n, line in enumerate(("line-1", "line-1", "line-2", "line-1")):
        store.ingest.add_item(make_item(line_id=line, frame_id=f"{line}:cam0:b:{n}"), jpeg())
    for item_id in (1, 2, 3, 4):
        store.reviews.add(item_id, "accept", "ana", None, 3.0)
    assert store.reviews.ask_again([4], "lineside train") == [4]  # before the page opened: not news
    page = client.get("/").text
    opened = store.queue.watermarks()[1]
    assert f'data-after-audit-id="{opened}"' in page
    import threading

    threading.Timer(0.3, lambda: store.reviews.ask_again([1, 3], "lineside train")).start()
    r = client.get("/api/events", params={"after_id": 4, "after_audit_id": opened, "max_events": 1,
                                          "timeout_s": 10, "line": "line-1"})
    [event] = _events(r.text)
    assert event["asked_again"] == 1 and event["new"] == 0 and event["pending"] == 3, "item 3 is line-2's"
    assert event["id"] == f"4/{store.queue.watermarks()[1]}"
    # a reconnect from that event counts nothing twice; a stream with no starting point only what comes next
    started = time.monotonic()
    r = client.get("/api/events", params={"timeout_s": 1.2}, headers={"Last-Event-ID": event["id"]})
    assert _events(r.text) == [] and 1.0 < time.monotonic() - started < 5
    r = client.get("/api/events", params={"after_id": 4, "timeout_s": 1.2})
    assert _events(r.text) == []
    # answers write audit rows too, but ask nothing again: no event
    threading.Timer(0.3, lambda: store.reviews.add(1, "reject", "ben", None, 2.0)).start()
    r = client.get("/api/events", params={"after_id": 4, "after_audit_id": event["id"].split("/")[1],
                                          "timeout_s": 1.5})
    assert _events(r.text) == [] and store.queue.watermarks()[1] > int(event["id"].split("/")[1])
    r = client.get("/api/events", params={"after_id": 4, "after_audit_id": opened, "max_events": 1,
                                          "status": "reviewed"})
    assert _events(r.text)[0]["asked_again"] == 1, "item 1, answered again since, under the reviewed filter"
    # an item that arrives, is answered and asked again between two looks is news once: as an arrival
    audit_before = store.queue.watermarks()[1]
    store.ingest.add_item(make_item(frame_id="line-1:cam0:b:9"), jpeg())
    store.reviews.add(5, "accept", "ana", None, 3.0)
    assert store.reviews.ask_again([5], "lineside train") == [5]
    r = client.get("/api/events", params={"after_id": 4, "after_audit_id": audit_before, "max_events": 1})
    [event] = _events(r.text)
    assert (event["new"], event["asked_again"]) == (1, 0)


def test_the_queue_page_carries_the_stream_starting_point(app_client, store, make_item, jpeg):
    client, _ = app_client
    store.ingest.add_item(make_item(), jpeg())
    page = client.get("/", params={"line": "line-1"}).text
    assert 'data-after-id="1"' in page and 'data-query="line=line-1"' in page and 'id="arrivals"' in page


# ---- stats ----

def _review_at(store: Store, item_id: int, decision: str, who: str, at: float, seconds: float,
               cls: str | None = None, fraction: float = 0.0) -> None:
    store.reviews.add(item_id, decision, who, cls, seconds, now=at, second_review_fraction=fraction)


def test_review_stats_rate_median_workload_and_agreement(store, make_item, jpeg):
    now = 1_800_000_000.0 + 1800  # half past an hour
    verdicts = ["crack", "crack", "crack", "good", "good", "spot", "crack"]
    for v in verdicts:
        store.ingest.add_item(make_item(verdict=v), jpeg())
    _review_at(store, 1, "accept", "ana", now - 10, 4)  # crack ok
    _review_at(store, 2, "reject", "ana", now - 20, 10)  # crack -> good
    _review_at(store, 3, "relabel", "ana", now - 3 * 3600, 6, "spot")  # crack -> spot (same side)
    _review_at(store, 4, "accept", "ben", now - 3 * 3600 - 5, 30)  # good ok
    _review_at(store, 5, "relabel", "ben", now - 30 * 3600, 99, "crack")  # good -> crack, outside 24 h
    _review_at(store, 6, "accept", "ben", now - 60, 2, fraction=1.0)  # spot, sampled for a second review
    _review_at(store, 6, "reject", "ana", now - 50, 8)  # ... second answer disagrees
    _review_at(store, 7, "accept", "ana", now - 40, 5, fraction=1.0)  # waits for its second review
    stats = review_stats(store, 24, now=now)
    assert stats.reviews == 7 and stats.reviews_last_hour == 5
    assert stats.active_hours == 2 and stats.per_active_hour == pytest.approx(3.5)
    assert stats.median_seconds == 6.0  # 2 4 5 6 8 10 30
    by = {r.username: r for r in stats.reviewers}
    assert (by["ana"].reviews, by["ana"].active_hours, by["ana"].median_seconds) == (5, 2, 6.0)  # 4 5 6 8 10
    assert (by["ben"].reviews, by["ben"].median_seconds) == (2, 16.0)  # 2 30
    assert len(stats.hours) == 24 and stats.hours[-1].start_wall == now - 1800
    assert stats.hours[-1].reviews == 5 and stats.hours[-4].reviews == 2
    assert sum(h.arrivals for h in stats.hours) == 0  # the items arrived now, years after this test's "now"
    agreement = {c.verdict: c for c in stats.classes}
    assert (agreement["crack"].n, agreement["crack"].agree, agreement["crack"].agree_good_defect) == (4, 2, 3)
    assert agreement["crack"].answers == {"crack": 2, "good": 1, "spot": 1}
    assert (agreement["good"].n, agreement["good"].agree) == (1, 1)  # item 5 was answered before the window
    longer = {c.verdict: c for c in review_stats(store, 48, now=now).classes}["good"]
    assert (longer.n, longer.agree, longer.agree_good_defect) == (2, 1, 1)
    assert (agreement["spot"].n, agreement["spot"].agree) == (1, 0)  # the second answer (good) is the latest
    second = stats.second
    assert (second.n, second.agree_good_defect, second.agree, second.waiting) == (1, 0, 0, 1)
    assert [(d.item_id, d.first, d.first_reviewer, d.second, d.second_reviewer) for d in second.disagreements] == [
        (6, "spot", "ben", "good", "ana")]
    assert json.loads(json.dumps(stats.as_dict()))["second_review"]["pairs"] == 1


def test_stats_page_and_json(app_client, store, make_item, jpeg):
    client, _ = app_client
    store.ingest.add_item(make_item(), jpeg())
    store.reviews.add(1, "accept", "ana", seconds_spent=3)
    page = client.get("/stats")
    assert page.status_code == 200 and 'id="agreement"' in page.text and 'id="workload"' in page.text
    data = client.get("/api/stats/reviews", params={"hours": 1}).json()
    assert data["reviews"] == 1 and data["median_seconds"] == 3.0 and data["window_hours"] == 1
    assert data["hours"][-1]["arrivals"] == 1 and data["hours"][-1]["reviews"] == 1
    assert client.get("/api/stats/reviews", params={"hours": 0}).status_code == 422


@pytest.fixture
def app_client(store: Store, storage_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(store, storage_dir, config=StationConfig(storage_dir=storage_dir))
    make_user(store, "ana")
    with TestClient(app) as client:
        login(client, "ana")
        yield client, app


def test_help_overlay_and_readme_list_every_item_key(app_client, store, make_item, jpeg):
    """Every key the item page's script handles is in its ``?`` overlay and in README's "Console keys"."""
    client, _ = app_client
    store.ingest.add_item(make_item(), jpeg())
    page = client.get("/items/1").text
    help_text = page.split('id="help"')[1]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    keys = readme.split("## Console keys", 1)[1].split("\n## ", 1)[0]
    for key in ("a", "r", "l", "s", "u", "b", "c", "o", "h", "g", "d", "z", "Tab", "Del", "?", "Esc", "+", "0"):
        assert f"<kbd>{key}</kbd>" in help_text, key
        assert f"`{key}`" in keys, key
    queue_help = client.get("/").text.split('id="help"')[1]
    for key in ("j", "k", "Enter", "n", "r"):
        assert f"<kbd>{key}</kbd>" in queue_help, key


def test_the_next_item_fetched_ahead_takes_no_lease_and_is_kept_a_minute(store, storage_dir, make_item, jpeg):
    from console_support import login, make_user
    from fastapi.testclient import TestClient

    from edge.station.console import create_app

    make_user(store, "ana")
    make_user(store, "ben")
    for u in (0.9, 0.8):
        store.ingest.add_item(make_item(uncertainty=u), jpeg())
    app = create_app(store, storage_dir)
    with TestClient(app) as ana, TestClient(app) as ben:
        login(ana, "ana")
        login(ben, "ben")
        page = ana.get("/items/1")
        assert page.headers["cache-control"] == "no-cache" and store.queue.lease_of(1).username == "ana"
        assert 'href="/items/2?ahead=1"' in page.text  # the next item, fetched ahead by the browser
        assert '"prerender": [{"urls": ["/items/2?ahead=1"]}]' in page.text  # or rendered ahead (Chrome)
        ahead = ana.get("/items/2", params={"ahead": "1"})
        assert ahead.status_code == 200 and ahead.headers["cache-control"] == "private, max-age=60"
        assert store.queue.lease_of(2) is None and 'data-claim="1"' in ahead.text  # the page leases it when shown
        assert 'id="lease" hidden' in ahead.text
        # meanwhile ben takes item 2: ana's page, when shown, asks for the lease and is refused (409)
        assert ben.get("/items/2").status_code == 200
        assert ana.post("/api/items/2/lease").status_code == 409
