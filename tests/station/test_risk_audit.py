"""The risk audit on a real SQLite station: sampled items stored and reviewed through the Store, the estimate, its
alarm (logged once per transition), the console page / banner / JSON and the Prometheus gauges."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator

import pytest
from console_support import login, make_user
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import event

from edge.config import StationConfig
from edge.station.console import create_app
from edge.station.risk_audit import AuditCollector, AuditMonitor, audit_counts, estimate
from edge.station.store import Store
from edge.uncertainty.risk import clopper_pearson

_frames = itertools.count(1)


@pytest.fixture
def sample(store: Store, make_item, jpeg) -> Callable[..., list[int]]:
    """sample(line, verdict, answers): one sampled item per answer, reviewed so that its final verdict is the
    answer (None: left pending). Returns the item ids."""
    image = jpeg()

    def add(line: str, verdict: str, answers: list[str | None], reason: str = "sampled") -> list[int]:
        items = []
        for _ in answers:
            n = next(_frames)
            items.append(make_item(line_id=line, frame_id=f"{line}:cam0:b1:{n}", seq=n, verdict=verdict,
                                   reason=reason, uncertainty=0.05, regions=[]))
        store.ingest.add_items([(item, image) for item in items])
        ids = [view.id for view in store.queue.list_items(status=None, limit=100_000)
               if view.frame_id in {i.frame_id for i in items}]
        for item_id, answer in zip(sorted(ids), answers, strict=True):
            if answer is None:
                continue
            if answer == verdict:
                store.reviews.add(item_id, "accept", "ana")
            elif answer == "good":
                store.reviews.add(item_id, "reject", "ana")
            else:
                store.reviews.add(item_id, "relabel", "ana", defect_class=answer)
        return sorted(ids)

    return add


def _by_line(store: Store, alpha: float = 0.01, by_line: dict[str, float] | None = None):
    return {a.line_id: a for a in estimate(store, alpha, by_line)}


def test_no_errors(store: Store, sample):
    sample("line-1", "good", ["good"] * 30)
    sample("line-1", "crack", ["crack"] * 10)
    a = _by_line(store)["line-1"]
    assert (a.n, a.errors, a.class_errors, a.rate, a.lower) == (40, 0, 0, 0.0, 0.0)
    assert a.upper == pytest.approx(clopper_pearson(0, 40, 0.95)[1]) and 0.08 < a.upper < 0.09
    assert a.state == "ok" and a.alpha == 0.01


def test_errors_at_the_good_defect_level_and_class_level_apart(store: Store, sample):
    # 100 reviewed sampled items: 2 misses (good → crack), 1 false alarm (crack → good), 4 wrong classes
    sample("line-1", "good", ["good"] * 68 + ["crack"] * 2)
    sample("line-1", "crack", ["crack"] * 25 + ["good"] + ["spot"] * 4)
    sample("line-1", "crack", [None] * 3)                       # sampled but not reviewed yet: not in n
    sample("line-1", "good", ["crack"] * 20, reason="uncertain")  # not sampled: never in the audit
    a = _by_line(store)["line-1"]
    assert (a.n, a.errors, a.class_errors) == (100, 3, 7)
    assert a.rate == pytest.approx(0.03) and a.class_rate == pytest.approx(0.07)
    assert (a.lower, a.upper) == pytest.approx(clopper_pearson(3, 100, 0.95))
    assert (a.class_lower, a.class_upper) == pytest.approx(clopper_pearson(7, 100, 0.95))
    assert a.lower < 0.01 < a.rate and a.state == "warning"  # above α, but not surely
    assert _by_line(store, alpha=0.05)["line-1"].state == "ok"


def test_latest_review_counts_and_an_undone_one_does_not(store: Store, sample):
    ids = sample("line-1", "good", ["good"] * 10)
    store.reviews.add(ids[0], "relabel", "ben", defect_class="crack")  # ben overrules ana: now an error
    assert _by_line(store)["line-1"].errors == 1
    assert store.reviews.undo_last("ben", minutes=5) == ids[0]          # ben takes it back: ana's answer again
    a = _by_line(store)["line-1"]
    assert (a.n, a.errors) == (10, 0)
    assert store.reviews.undo_last("ana", minutes=5) == ids[-1]  # her latest: back to pending, out of n
    a = _by_line(store)["line-1"]
    assert (a.n, a.errors) == (9, 0)


def test_lines_alpha_per_line_and_one_grouped_query(store: Store, sample):
    sample("line-1", "good", ["good"] * 5)
    sample("line-2", "crack", ["good"] * 5 + ["crack"] * 5)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with store.session() as s:
        counts = audit_counts(s)
    selects = [st for st in statements if st.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements  # one grouped statement, however many lines
    assert counts == {"line-1": (5, 0, 0), "line-2": (10, 5, 5)}
    lines = _by_line(store, 0.01, {"line-2": 0.2, "line-3": 0.02})
    assert sorted(lines) == ["line-1", "line-2", "line-3"]  # line-3: configured, nothing sampled yet
    assert lines["line-2"].alpha == 0.2 and lines["line-1"].alpha == 0.01
    assert lines["line-3"].state == "none" and lines["line-3"].n == 0
    assert lines["line-2"].state == "warning"  # 5 of 10 is 50 % > 20 %, but the lower bound is 18.7 %
    assert lines["line-2"].lower < 0.2 < lines["line-2"].rate
    assert _by_line(store, 0.01, {"line-2": 0.1})["line-2"].state == "alarm"


def test_alarm_is_logged_once_per_transition(store: Store, sample, caplog):
    monitor = AuditMonitor(store, alpha=0.01, ttl_s=3600)
    sample("line-1", "good", ["good"] * 50)
    with caplog.at_level(logging.INFO, logger="edge.station.risk_audit"):
        assert monitor.snapshot(0).lines[0].state == "ok"
        sample("line-1", "good", ["crack"] * 4)  # 4 / 54: lower bound ≈ 2 % > α
        first = monitor.snapshot(0)
        assert [a.line_id for a in first.alarms] == ["line-1"] and first.alarms[0].lower > 0.01
        monitor.snapshot(0)
        monitor.snapshot(0)
        sample("line-1", "good", ["crack"])  # still in alarm: no new line
        monitor.snapshot(0)
        sample("line-1", "good", ["good"] * 600)  # 5 / 655: back under the bound
        cleared = monitor.snapshot(0)
        assert cleared.lines[0].state != "alarm"
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.station.risk_audit"]
    assert len(messages) == 2, messages
    assert "ALARM on line line-1" in messages[0] and "4 errors in 54" in messages[0]
    assert "cleared" in messages[1]
    assert caplog.records[0].levelno == logging.ERROR


def test_the_monitor_caches_for_its_ttl(store: Store, sample):
    monitor = AuditMonitor(store, alpha=0.01, ttl_s=3600)
    sample("line-1", "good", ["good"] * 3)
    assert monitor.snapshot().lines[0].n == 3
    sample("line-1", "good", ["good"] * 2)
    assert monitor.snapshot().lines[0].n == 3  # cached (the banner on every page)
    assert monitor.snapshot(0).lines[0].n == 5


def test_prometheus_gauges(store: Store, sample):
    sample("line-1", "good", ["good"] * 20 + ["crack"] * 5)
    sample("line-2", "good", ["good"] * 10)
    registry = CollectorRegistry()
    registry.register(AuditCollector(AuditMonitor(store, alpha=0.01)))
    text = generate_latest(registry).decode()
    assert 'lineside_audit_error_rate{line="line-1"} 0.2' in text
    assert 'lineside_audit_n{line="line-1"} 25.0' in text
    assert 'lineside_audit_errors{line="line-1"} 5.0' in text
    assert 'lineside_audit_alarm{line="line-1"} 1.0' in text
    assert 'lineside_audit_alarm{line="line-2"} 0.0' in text
    assert 'lineside_audit_alpha{line="line-2"} 0.01' in text
    lower, upper = clopper_pearson(5, 25, 0.95)
    assert f'lineside_audit_error_rate_lower{{line="line-1"}} {lower!r}' in text
    assert f'lineside_audit_error_rate_upper{{line="line-1"}} {upper!r}' in text


@pytest.fixture
def console(store: Store, storage_dir) -> Iterator[TestClient]:
    make_user(store, "ana")
    cfg = StationConfig(storage_dir=storage_dir, audit_alpha=0.01, audit_alpha_by_line={"line-2": 0.5})
    with TestClient(create_app(store, storage_dir, config=cfg)) as c:
        yield c


def test_console_page_banner_and_json(store: Store, sample, console: TestClient):
    assert console.get("/api/risk-audit").status_code == 401  # not logged in: nothing
    assert "/login" in str(console.get("/audit").url)
    login(console, "ana")  # a reviewer, not an admin
    assert 'id="audit-alarm"' not in console.get("/").text and 'href="/audit"' in console.get("/").text

    sample("line-1", "good", ["good"] * 20 + ["crack"] * 5)  # alarm at α = 1 %
    sample("line-2", "crack", ["crack"] * 6 + ["good"] * 4)  # 40 % at α = 50 %: ok
    sample("line-3", "good", ["good"] * 49 + ["crack"])      # 2 % at α = 1 %: warning
    data = console.get("/api/risk-audit").json()
    assert data["alarm"] == ["line-1"] and data["warning"] == ["line-3"] and data["confidence"] == 0.95
    lines = {a["line_id"]: a for a in data["lines"]}
    assert (lines["line-1"]["n"], lines["line-1"]["errors"], lines["line-1"]["state"]) == (25, 5, "alarm")
    assert (lines["line-2"]["alpha"], lines["line-2"]["state"]) == (0.5, "ok")
    assert lines["line-3"]["rate"] == pytest.approx(0.02)

    html = console.get("/audit").text
    assert 'data-line="line-1"' in html and "ALARM" in html and "20.00 %" in html
    assert 'id="audit-alarm"' in html and 'id="audit-warning"' in html
    queue = console.get("/").text  # the banner is on the other pages too (cached figures, fresh here)
    assert 'id="audit-alarm"' in queue and "line <b>line-1</b>" in queue


def test_the_page_points_at_the_sampled_frames_waiting_instead_of_asking_for_sampling(store: Store, sample,
                                                                                        storage_dir):
    make_user(store, "ana")
    with TestClient(create_app(store, storage_dir)) as console:
        login(console, "ana")
        assert "set the line's audit sampling fraction" in console.get("/audit").text  # nothing sampled at all
        sample("line-1", "good", [None] * 3)  # sampled, nobody has answered yet
        sample("line-1", "good", [None], reason="uncertain")
        html = console.get("/audit").text
        assert "set the line's audit sampling fraction" not in html
        assert "No sampled frame has been reviewed yet: 3 wait" in html
        assert 'href="/?reason=sampled&amp;line=line-1">line-1: 3 ›' in html
        sample("line-1", "good", ["good", None])  # one answered: the table, with what still waits
        html = console.get("/audit").text
        assert 'data-line="line-1"' in html and "+ 4 waiting ›" in html and 'id="risk-audit-waiting"' not in html
