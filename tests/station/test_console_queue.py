"""Several reviewers: leases, the filtered and paged queue, the audit log, undo — over a real SQLite store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from console_support import login, make_user
from fastapi.testclient import TestClient
from sqlalchemy import select

import edge.station.store.queue as queue_module
from edge.station.console import create_app
from edge.station.store import LeaseConflict, QueueFilter, ReviewError, Store
from edge.station.tables import ReviewItemRow


@pytest.fixture
def app(store: Store, storage_dir):
    make_user(store, "ana")
    make_user(store, "ben")
    return create_app(store, storage_dir)


@pytest.fixture
def ana(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        login(c, "ana")
        yield c


@pytest.fixture
def ben(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        login(c, "ben")
        yield c


@pytest.fixture
def five(store, make_item, jpeg):
    """Items 1..5 with uncertainty .5 .9 .7 .3 .8: queue order 2, 5, 3, 1, 4."""
    for u in (0.5, 0.9, 0.7, 0.3, 0.8):
        store.ingest.add_item(make_item(uncertainty=u), jpeg())


def test_two_reviewers_never_get_the_same_next_item(store, five):
    got: dict[str, list[int]] = {"ana": [], "ben": []}
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        barrier.wait()
        while (item := store.queue.claim_next(name, minutes=5)) is not None:
            got[name].append(item)
            store.reviews.add(item, "accept", name)

    threads = [threading.Thread(target=work, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got["ana"] + got["ben"]) == [1, 2, 3, 4, 5]  # each item once, none twice
    assert store.queue.counts()["by_status"] == {"pending": 0, "reviewed": 5}


def test_a_head_answered_by_someone_else_meanwhile_is_not_handed_out(store, five, monkeypatch):
    """On PostgreSQL a reviewer can read the queue's head just before another one leases it, answers it and gives
    the lease back: the lease then goes through without a conflict. The claim must see the item is answered."""
    assert store.queue.claim_next("ana", minutes=5) == 2
    store.reviews.add(2, "accept", "ana")  # answered; ana's lease is given back
    real = queue_module.head_query
    calls = []

    def head_read_too_early(*args, **kwargs):  # the first read sees the head as it was before the answer
        calls.append(1)
        return select(ReviewItemRow.id).where(ReviewItemRow.id == 2) if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(queue_module, "head_query", head_read_too_early)
    assert store.queue.claim_next("ben", minutes=5) == 5  # the next pending head, not the answered item
    assert store.queue.lease_of(2) is None


def test_opening_an_item_leases_it_and_others_skip_it(ana, ben, store, five):
    assert ana.get("/items/2").status_code == 200
    lease = store.queue.lease_of(2)
    assert lease is not None and lease.username == "ana" and lease.expires_wall > time.time() + 4 * 60
    # ben's queue and next item skip it
    assert [i["id"] for i in ben.get("/api/items").json()] == [5, 3, 1, 4]
    assert 'data-item-id="2"' not in ben.get("/").text
    r = ben.post("/next", follow_redirects=False)
    assert r.headers["location"] == "/items/5"
    # ben opening it anyway sees who has it, with the actions locked
    page = ben.get("/items/2").text
    assert "being reviewed by ana" in page and "actions locked" in page
    r = ben.post("/items/2/review", data={"decision": "accept"}, follow_redirects=False)
    assert r.status_code == 409 and "being reviewed by ana" in r.json()["detail"]
    assert store.queue.get_item(2).status == "pending"
    # ana's review goes through, releases the lease and hands her the next item nobody holds (5 is ben's)
    r = ana.post("/items/2/review", data={"decision": "accept"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/3"
    assert store.queue.lease_of(2) is None and store.queue.lease_of(3).username == "ana"


def test_leases_expire(store, five):
    now = time.time()
    store.queue.claim(2, "ana", minutes=1, now=now)
    with pytest.raises(LeaseConflict, match="ana"):
        store.queue.claim(2, "ben", minutes=1, now=now + 30)
    with pytest.raises(LeaseConflict):
        store.reviews.add(2, "accept", "ben", now=now + 30)
    assert store.queue.claim_next("ben", 1, now=now + 30) == 5
    # a minute later ana's lease is gone: ben may take it and review it
    assert store.queue.claim(2, "ben", minutes=1, now=now + 61).username == "ben"
    store.reviews.add(2, "accept", "ben", now=now + 62)
    assert store.queue.get_item(2).latest_review.reviewer == "ben"


def test_the_page_renews_its_lease(ana, ben, store, five):
    ana.get("/items/2")
    first = store.queue.lease_of(2)
    r = ana.post("/api/items/2/lease")
    assert r.status_code == 200 and r.json()["expires_wall"] >= first.expires_wall
    assert r.json()["claimed_wall"] == first.claimed_wall  # time spent keeps counting from the first open
    assert ben.post("/api/items/2/lease").status_code == 409
    assert ana.post("/api/items/99/lease").status_code == 404


def test_audit_records_who_when_before_after_and_time_spent(ana, store, five):
    ana.get("/items/2")
    ana.post("/items/2/review", data={"decision": "accept", "seconds_spent": "4.2"})
    ana.get("/items/3")
    ana.post("/items/3/review", data={"decision": "relabel", "defect_class": "spot"})  # no client figure
    log = store.audit.recent()
    reviews = [e for e in log if e.action == "review"]
    assert [e.item_id for e in reviews] == [3, 2]
    second, first = reviews
    assert first.username == "ana" and first.seconds_spent == 4.2
    assert (first.before["status"], first.before["review"]) == ("pending", None)
    assert first.before["boxes"] == first.after["boxes"] == [{"x": 30, "y": 38, "w": 62, "h": 18, "class": "crack"}]
    assert first.after["status"] == "reviewed" and first.after["review"]["final_verdict"] == "crack"
    assert second.after["review"]["final_verdict"] == "spot" and second.seconds_spent is not None  # from the lease
    assert {e.action for e in log} >= {"login", "lease", "review"}
    assert all(e.at_wall <= time.time() for e in log)


def test_undo_takes_back_my_last_review_and_reopens_the_item(ana, ben, store, five):
    ana.post("/items/2/review", data={"decision": "reject"})
    assert store.queue.get_item(2).status == "reviewed"
    r = ana.post("/undo", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/2"
    item = store.queue.get_item(2)
    assert item.status == "pending" and item.reviews == []
    assert store.queue.lease_of(2).username == "ana"
    undo = store.audit.recent(1)[0]
    assert undo.action == "undo" and undo.before["review"]["decision"] == "reject" and undo.after["review"] is None
    assert ben.post("/undo", follow_redirects=False).status_code == 409  # nothing of ben's


def test_undo_refused_when_someone_reviewed_since(store, five):
    store.reviews.add(2, "accept", "ana")
    store.reviews.add(2, "reject", "ben")
    with pytest.raises(ReviewError, match="reviewed again by ben"):
        store.reviews.undo_last("ana", 5)


def test_queue_filters(ana, store, make_item, jpeg):
    now = time.time()
    store.ingest.add_item(make_item(line_id="line-1", verdict="crack", reason="uncertain", captured_wall=now - 7200,
                                    decided_wall=now - 7200), jpeg())
    store.ingest.add_item(make_item(line_id="line-2", verdict="spot", reason="unknown_frame", captured_wall=now - 60,
                                    decided_wall=now - 60), jpeg())
    store.ingest.add_item(make_item(line_id="line-2", verdict="crack", reason="sampled", captured_wall=now - 30,
                                    decided_wall=now - 30), jpeg())
    store.reviews.add(3, "accept", "ana")

    def ids(**params: str) -> list[int]:
        r = ana.get("/api/items", params=params)
        assert r.status_code == 200, r.text
        return sorted(i["id"] for i in r.json())

    assert ids() == [1, 2]
    assert ids(status="all") == [1, 2, 3] and ids(status="reviewed") == [3]
    assert ids(status="all", line="line-2") == [2, 3]
    assert ids(status="all", verdict="crack") == [1, 3]
    assert ids(reason="unknown_frame") == [2]
    assert ids(status="all", since=str(now - 3600)) == [2, 3]
    assert ids(status="all", until=str(now - 3600)) == [1]
    local = time.strftime("%Y-%m-%dT%H:%M", time.localtime(now - 3600))
    assert ids(status="all", since=local) == [2, 3]
    assert ana.get("/api/items", params={"since": "yesterday"}).status_code == 422
    assert ana.get("/api/items", params={"sort": "random"}).status_code == 422
    page = ana.get("/", params={"status": "all", "line": "line-2"}).text
    assert 'data-item-id="2"' in page and 'data-item-id="1"' not in page
    assert '<option value="line-2" selected>' in page


def test_keyset_pages_cover_the_queue_exactly_once_in_order(ana, store, make_item, jpeg):
    data = jpeg()
    for i in range(23):
        store.ingest.add_item(make_item(uncertainty=round((i * 7 % 10) / 10, 1)), data)  # many ties
    for sort in ("uncertainty", "age"):
        seen, after = [], None
        while True:
            params = {"limit": "5", "sort": sort} | ({"after": after} if after else {})
            r = ana.get("/api/items", params=params)
            seen += [(i["uncertainty"], i["captured_wall"], i["id"]) for i in r.json()]
            after = r.headers.get("x-next-cursor")
            if after is None:
                break
        assert sorted(i for _, _, i in seen) == list(range(1, 24))
        key = (lambda t: (-t[0], t[2])) if sort == "uncertainty" else (lambda t: (t[1], t[2]))
        assert seen == sorted(seen, key=key)
    html = ana.get("/", params={"limit": "5"}).text
    assert 'id="next-page"' in html and 'id="first-page"' not in html
    assert ana.get("/api/items", params={"after": "nonsense"}).status_code == 422


def test_queue_page_store_level(store, five):
    page = store.queue.page(QueueFilter(), "ana", limit=2)
    assert [i.id for i in page.items] == [2, 5] and page.total == 5 and page.next_cursor == "0.8:5"
    page = store.queue.page(QueueFilter(), "ana", limit=2, after=(0.8, 5))
    assert [i.id for i in page.items] == [3, 1]
    assert [i.id for i in store.queue.page(QueueFilter(sort="age"), "ana", limit=10).items] == [1, 2, 3, 4, 5]


def test_item_page_prefetches_the_next_image_and_shows_the_keys(ana, five):
    html = ana.get("/items/2").text
    assert '<link rel="prefetch" href="/images/5" as="image">' in html
    for key in ("<kbd>h</kbd>", "<kbd>u</kbd>", "<kbd>s</kbd>", "<kbd>+</kbd>"):
        assert key in html


def test_skipped_items_stay_out_of_the_way_until_nothing_else_waits(ana, store, five):
    """s on an item gives it back and takes the next; it does not come straight back (no bouncing between two)."""
    def skip(item_id: int) -> str:
        r = ana.post("/next", data={"skip": str(item_id)}, headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        return r.json()["next_url"]

    assert ana.post("/next", headers={"Accept": "application/json"}).json()["next_url"] == "/items/2"
    assert skip(2) == "/items/5"
    assert skip(5) == "/items/3"  # not 2 again
    ana.post("/items/3/review", data={"decision": "accept"})
    assert ana.post("/next", headers={"Accept": "application/json"}).json()["next_url"] == "/items/1"
    assert skip(1) == "/items/4"
    assert skip(4) == "/items/2"  # only skipped ones wait: they come back, in queue order
    assert store.queue.lease_of(2).username == "ana"
