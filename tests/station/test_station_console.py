"""The console over a real store, through FastAPI's TestClient: pages, review posts, images, JSON API.

Every client here is logged in as reviewer "ana" and sends her CSRF header (auth itself: test_station_auth.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from console_support import login, make_user
from fastapi.testclient import TestClient

from edge.station.console import create_app
from edge.station.store import Store


@pytest.fixture
def client(store: Store, storage_dir) -> Iterator[TestClient]:
    counters = {"received": 5, "stored": 3, "duplicates": 1, "malformed": 1, "errors": 0}
    make_user(store, "ana")
    with TestClient(create_app(store, storage_dir, ingest_counters=lambda: counters)) as c:
        login(c, "ana")
        yield c


@pytest.fixture
def three(store, make_item, jpeg, region):
    """Three pending items: ids 1 (u=0.3), 2 (u=0.9, two regions), 3 (u=0.6, verdict good)."""
    store.ingest.add_item(make_item(uncertainty=0.3), jpeg())
    store.ingest.add_item(make_item(uncertainty=0.9, regions=[
        region(), region(x=150, y=160, w=40, h=30, defect_class="spot", location="lower-right",
                         caption="spot, lower-right, 40×30 px (1.9 %)", peak=0.7)]), jpeg(seed=1))
    store.ingest.add_item(make_item(uncertainty=0.6, verdict="good", regions=[]), jpeg(seed=2))


def test_queue_lists_pending_most_uncertain_first(client, three):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    rows = [html.index(f'data-item-id="{i}"') for i in (2, 3, 1)]
    assert rows == sorted(rows)
    assert "crack, upper-left, 62×18 px (1.8 %)" in html
    assert "/static/console.js" in html and "http" not in html.split("<body", 1)[0].replace("http-equiv", "")


def test_empty_queue(client):
    assert "Queue is empty" in client.get("/").text


def test_item_page_has_boxes_captions_scores_and_actions(client, three):
    html = client.get("/items/2").text
    assert 'viewBox="0 0 250 250"' in html
    assert html.count("<rect ") == 2
    assert 'x="30" y="38" width="62" height="18"' in html
    assert "crack, upper-left, 62×18 px (1.8 %)" in html and "spot, lower-right, 40×30 px (1.9 %)" in html
    assert 'src="/images/2"' in html
    for name in ("good", "crack", "spot"):
        assert f'<option value="{name}"' in html
    assert "0.640" in html and "0.500" in html  # anomaly score vs threshold
    assert "starter-0.1.0" in html and "line-1/v3" in html
    assert 'data-decision="accept"' in html and 'data-decision="reject"' in html


def test_item_page_escapes_untrusted_text(client, store, make_item, jpeg, region):
    store.ingest.add_item(make_item(regions=[region(caption="<script>alert(1)</script>")]), jpeg())
    html = client.get("/items/1").text
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


def test_missing_item_page_is_404(client):
    assert client.get("/items/999").status_code == 404


def test_review_redirects_to_next_pending_then_to_queue(client, store, three):
    r = client.post("/items/2/review", data={"decision": "accept", "reviewer": "mallory", "seconds_spent": "3.5"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/3"
    r = client.post("/items/3/review", json={"decision": "relabel", "defect_class": "spot"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/1"
    r = client.post("/items/1/review", data={"decision": "reject", "defect_class": ""}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    latest = {i: store.queue.get_item(i).latest_review for i in (1, 2, 3)}
    decisions = {i: (review.decision, review.final_verdict) for i, review in latest.items() if review is not None}
    assert decisions == {1: ("reject", "good"), 2: ("accept", "crack"), 3: ("relabel", "spot")}
    assert store.queue.get_item(2).latest_review.seconds_spent == 3.5
    # the reviewer is the logged-in user, whatever the client claims
    assert {store.queue.get_item(i).latest_review.reviewer for i in (1, 2, 3)} == {"ana"}


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"decision": "approve"}, 422, "unknown decision 'approve'"),
    ({"decision": "relabel", "defect_class": "hole"}, 422, "unknown class 'hole'"),
    ({"decision": "relabel"}, 422, "relabel needs defect_class"),
    ({"defect_class": "crack"}, 422, "decision"),
    ({"decision": "accept", "seconds_spent": "soon"}, 422, "seconds_spent"),
])
def test_review_validation(client, store, three, payload, status, message):
    r = client.post("/items/2/review", data=payload, follow_redirects=False)
    assert r.status_code == status
    assert message in r.json()["detail"]
    assert store.queue.get_item(2).status == "pending"


def test_review_validation_json(client, three):
    r = client.post("/items/2/review", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/items/2/review", json=["accept"])
    assert r.status_code == 422


def test_review_of_missing_item_is_404(client):
    r = client.post("/items/77/review", data={"decision": "accept"}, follow_redirects=False)
    assert r.status_code == 404


def test_image_by_id(client, store, three, storage_dir):
    r = client.get("/images/2")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content == store.queue.image_file(2).read_bytes()
    assert "max-age" in r.headers["cache-control"]


@pytest.mark.parametrize(("url", "allowed"), [
    ("/images/999", {404}),
    ("/images/abc", {404, 422}),
    ("/images/..%2F..%2Fetc%2Fpasswd", {404, 422}),
    ("/images/%2e%2e/%2e%2e/etc/passwd", {404, 422}),
    ("/images/line-1%2Fline-1%3Acam0%3Aboot1%3A1.jpg", {404, 422}),
    ("/images/-1", {404}),
])
def test_image_lookup_refuses_anything_but_an_item_id(client, three, url, allowed):
    r = client.get(url)
    assert r.status_code in allowed
    assert r.headers.get("content-type") != "image/jpeg"


def test_image_file_missing_is_404_not_500(client, store, three):
    store.queue.image_file(1).unlink()
    assert client.get("/images/1").status_code == 404


def test_api_items_and_item(client, three):
    items = client.get("/api/items", params={"status": "pending", "limit": 2}).json()
    assert [i["id"] for i in items] == [2, 3]
    assert items[0]["top_caption"] == "crack, upper-left, 62×18 px (1.8 %)"
    assert [i["id"] for i in client.get("/api/items", params={"limit": 2, "offset": 2}).json()] == [1]
    assert client.get("/api/items", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/items", params={"limit": 0}).status_code == 422
    one = client.get("/api/items/2").json()
    assert one["frame_id"].startswith("line-1:cam0:") and len(one["regions"]) == 2
    assert one["image_url"] == "/images/2" and one["latest_review"] is None
    assert client.get("/api/items/999").status_code == 404


def test_api_stats_and_health(client, three):
    client.post("/items/2/review", data={"decision": "accept"}, follow_redirects=False)
    stats = client.get("/api/stats").json()
    assert stats["counts"]["by_status"] == {"pending": 2, "reviewed": 1}
    assert stats["counts"]["by_verdict"] == {"crack": 2, "good": 1}
    assert stats["ingest"]["malformed"] == 1
    assert client.get("/api/items", params={"status": "reviewed"}).json()[0]["latest_review"]["decision"] == "accept"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_static_files_are_served(client):
    assert "keydown" in client.get("/static/console.js").text
    assert client.get("/static/console.css").status_code == 200


def test_an_item_asked_again_says_what_was_answered_and_takes_a_new_answer(client, store, three):
    client.post("/items/2/review", data={"decision": "reject"}, follow_redirects=False)
    assert "Asked again" not in client.get("/items/2").text
    assert store.reviews.ask_again([2], "lineside train") == [2]
    html = client.get("/items/2").text
    assert 'id="asked-again"' in html and "<b>reject</b> →\n      good by ana" in html
    queue = client.get("/").text
    assert 'data-item-id="2"' in queue, "back in the queue"
    row = queue[queue.index('data-item-id="2"'):].split("</tr>")[0]
    assert "asked again</span>" in row and "was good by ana" in row, "the queue marks it and names the last answer"
    assert "asked again</span>" not in queue[queue.index('data-item-id="1"'):].split("</tr>")[0]
    r = client.post("/items/2/review", data={"decision": "accept"}, follow_redirects=False)
    assert r.status_code == 303
    item = store.queue.get_item(2)
    assert item.status == "reviewed" and item.latest_review.final_verdict == "crack" and len(item.reviews) == 2
