"""The admin's audit log page: readable times and changes, runs of leases folded, a filter by user and action."""

from __future__ import annotations

import re

from console_support import login, make_user
from fastapi.testclient import TestClient

from edge.station.console import create_app
from edge.station.store import AuditEntry
from edge.station.views.audit_log import describe, readable


def _entry(i: int, action: str, user: str = "ana", item: int | None = None, before=None, after=None) -> AuditEntry:
    return AuditEntry(id=i, at_wall=1_700_000_000.0 + i, username=user, action=action, item_id=item, before=before,
                      after=after, seconds_spent=None)


def test_a_review_reads_as_its_answer_and_times_as_clock_times():
    after = {"status": "reviewed", "review": {"decision": "relabel", "final_verdict": "spot", "reviewer": "ana",
                                              "boxes": [{"x": 1}], "comment": "oil", "group_id": 4},
             "boxes": [{"x": 1}, {"x": 2}], "expires_wall": 1_700_000_000.0}
    text = describe(after)
    assert "relabel → spot, 1 box drawn, with look-alike group 4, “oil” by ana" in text
    assert "2 boxes" in text and "1700000000" not in text and re.search(r"expires \d{4}-\d\d-\d\d \d\d:", text)
    assert describe(None) == "—"


def test_runs_of_one_persons_leases_fold_into_one_row():
    entries = [_entry(9, "review", item=3), *[_entry(8 - k, "lease", item=k + 1) for k in range(6)],
               _entry(2, "lease", user="ben", item=7), _entry(1, "login")]  # newest first, as the log reads
    lines = readable(entries)
    assert [(line.action, line.username, line.count) for line in lines] == [
        ("review", "ana", 1), ("lease", "ana", 6), ("lease", "ben", 1), ("login", "ana", 1)]
    assert lines[1].after == "6 leases: #1, #2, #3, #4, #5, #6" and lines[1].first_wall < lines[1].at_wall
    taken_over = readable([_entry(2, "lease", item=1, before={"username": "ben"}), _entry(1, "lease", item=2)])
    assert len(taken_over) == 2  # a lease taken over from someone else keeps its own row


def test_the_admin_page_filters_by_user_and_action(store, storage_dir, make_item, jpeg):
    make_user(store, "root", "admin")
    make_user(store, "ben")
    for u in (0.9, 0.8, 0.7):
        store.ingest.add_item(make_item(uncertainty=u), jpeg())
    for item_id in (1, 2, 3):
        store.queue.claim(item_id, "ben", 5)
    store.reviews.add(1, "accept", "ben")
    with TestClient(create_app(store, storage_dir)) as admin:
        login(admin, "root")
        html = admin.get("/admin").text
        assert "lease ×3" in html and "3 leases: #1, #2, #3" in html and "accept → crack" in html
        assert not re.search(r"\b1[67]\d{8}\.\d", html)  # no epoch seconds
        only_ben = admin.get("/admin", params={"user": "ben", "action": "review"}).text
        assert "accept → crack" in only_ben and "lease ×3" not in only_ben and "login" not in only_ben.split(
            'id="audit"')[1]
        assert admin.get("/api/audit", params={"action": "lease"}).json()[0]["action"] == "lease"
        store.reviews.ask_again([1], "lineside train")
        asked = admin.get("/admin", params={"action": "recheck"}).text.split('id="audit"')[1]
        assert "lineside train" in asked and "accept → crack" in asked and "pending" in asked
