"""Console auth: every route needs a login, sessions are signed cookies, CSRF on every change, roles, users CLI."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import PASSWORD, csrf_of, login, make_user
from fastapi.testclient import TestClient
from starlette.routing import Mount
from typer.testing import CliRunner

from edge.cli import app as cli_app
from edge.station.auth import SessionCodec, load_or_create_secret, safe_next
from edge.station.console import create_app
from edge.station.store import Store
from edge.station.users import UserError, add_user, authenticate, hash_password, set_disabled, verify_password

PUBLIC = {"/login", "/healthz", "/favicon.ico"}


@pytest.fixture
def app(store: Store, storage_dir: Path):
    return create_app(store, storage_dir)


@pytest.fixture
def anon(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def items(store, make_item, jpeg):
    for u in (0.3, 0.9, 0.6):
        store.ingest.add_item(make_item(uncertainty=u), jpeg())


def _concrete(path: str) -> str:
    return path.replace("{item_id}", "1").replace("{group_id}", "1")


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, including those of included routers (FastAPI keeps those nested, without a prefix here)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def test_every_route_but_login_health_and_static_needs_a_session(app, anon, items):
    checked = 0
    paths = {route.path for route in _routes(app.routes)}
    # later routes are among those checked: live arrivals, the stats page and its JSON, groups and thumbnails
    assert {"/api/events", "/stats", "/api/stats/reviews", "/groups/{group_id}", "/thumbs/{item_id}"} <= paths
    for route in _routes(app.routes):
        if isinstance(route, Mount):
            continue
        for method in getattr(route, "methods", None) or {"GET"}:
            path = _concrete(route.path)
            r = anon.request(method, path, follow_redirects=False)
            if route.path in PUBLIC:
                assert r.status_code in (200, 303, 403), (method, path, r.status_code)  # POST /login: no CSRF
                continue
            checked += 1
            if path.startswith("/api/") or method not in ("GET", "HEAD"):
                assert r.status_code == 401, (method, path, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
            assert r.headers.get("content-type") != "image/jpeg"
    assert checked >= 15
    stream = anon.get("/api/events", params={"max_events": 1, "timeout_s": 1}, headers={"Accept": "text/event-stream"})
    assert stream.status_code == 401 and "event:" not in stream.text
    assert anon.get("/healthz").json() == {"status": "ok"}
    assert anon.get("/static/console.js").status_code == 200
    icon = anon.get("/favicon.ico")  # what a browser asks for by itself: no 404 in its console
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert app.state.console.counters["unauthenticated"] == checked + 1


def test_image_route_rejects_unauthenticated_and_traversal(app, anon, store, items):
    assert anon.get("/images/1", follow_redirects=False).status_code == 303
    make_user(store, "ana")
    login(anon, "ana")
    assert anon.get("/images/1").status_code == 200
    for url in ("/images/..%2F..%2Fetc%2Fpasswd", "/images/%2e%2e/%2e%2e/etc/passwd", "/images/../../etc/passwd",
                "/images/1%2F..%2F..%2Fsession.secret", "/static/../session.secret", "/static/..%2Fsession.secret"):
        r = anon.get(url)
        assert r.status_code in (404, 422), url
        assert "session" not in r.text or "detail" in r.text


def test_login_sets_a_signed_httponly_lax_cookie_and_redirects_to_next(anon, store, items):
    make_user(store, "ana")
    r = anon.get("/items/2", follow_redirects=False)
    assert r.headers["location"] == "/login?next=%2Fitems%2F2"
    page = anon.get(r.headers["location"])
    assert 'name="next" value="/items/2"' in page.text
    r = anon.post("/login", data={"username": "ana", "password": PASSWORD, "next": "/items/2",
                                  "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/items/2"
    cookie = r.headers["set-cookie"]
    assert "lineside_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert anon.get("/items/2").status_code == 200
    assert "ana" in anon.get("/").text


def test_wrong_password_unknown_user_and_disabled_user_cannot_log_in(app, anon, store):
    make_user(store, "ana")
    make_user(store, "ben")
    set_disabled(store, "ben")
    for name, password in (("ana", "wrong password"), ("nobody", PASSWORD), ("ben", PASSWORD)):
        token = csrf_of(anon.get("/login").text)
        r = anon.post("/login", data={"username": name, "password": password, "csrf_token": token},
                      follow_redirects=False)
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    assert app.state.console.counters["login_failed"] == 3
    assert [e.action for e in store.audit.recent()] == ["login_failed"] * 3


def test_login_without_csrf_is_refused(app, anon, store):
    make_user(store, "ana")
    r = anon.post("/login", data={"username": "ana", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    assert app.state.console.counters["csrf_rejected"] == 1


def test_csrf_token_required_on_every_change(app, anon, store, items):
    make_user(store, "ana")
    token = login(anon, "ana")
    del anon.headers["X-CSRF-Token"]
    for url, body in (("/items/2/review", {"decision": "accept"}), ("/undo", {}), ("/next", {}),
                      ("/api/items/2/lease", {}), ("/logout", {})):
        r = anon.post(url, data=body, follow_redirects=False)
        assert r.status_code == 403, url
        assert "CSRF" in r.json()["detail"]
        r = anon.post(url, data=body, headers={"X-CSRF-Token": "forged"}, follow_redirects=False)
        assert r.status_code == 403, url
    assert app.state.console.counters["csrf_rejected"] == 10
    assert store.queue.get_item(2).status == "pending"
    # the same post with the token, as a form field or as the header, goes through
    r = anon.post("/items/2/review", data={"decision": "accept", "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    r = anon.post("/items/1/review", json={"decision": "accept"}, headers={"X-CSRF-Token": token},
                  follow_redirects=False)
    assert r.status_code == 303


def test_logout_ends_the_session_and_rotates_the_token(anon, store, items):
    make_user(store, "ana")
    token = login(anon, "ana")
    r = anon.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert anon.get("/", follow_redirects=False).status_code == 303
    assert anon.get("/api/items").status_code == 401
    assert csrf_of(anon.get("/login").text) != token
    assert [e.action for e in store.audit.recent()][:2] == ["logout", "login"]


def test_disabling_a_user_ends_their_session(anon, store, items):
    make_user(store, "ana")
    login(anon, "ana")
    assert anon.get("/api/items").status_code == 200
    set_disabled(store, "ana")
    assert anon.get("/api/items").status_code == 401


def test_forged_or_expired_cookie_is_anonymous(anon, store, storage_dir, items):
    make_user(store, "ana")
    user = authenticate(store, "ana", PASSWORD)
    assert user is not None
    anon.cookies.clear()
    forged = SessionCodec(b"x" * 32, 3600).dumps({"uid": user.id, "csrf": "t", "iat": 0, "exp": 2e9})
    anon.cookies.set("lineside_session", forged)
    assert anon.get("/api/items").status_code == 401
    real = SessionCodec(load_or_create_secret(storage_dir / "session.secret"), 3600)
    anon.cookies.clear()  # the 401 above came with a fresh anonymous session cookie
    anon.cookies.set("lineside_session", real.dumps({"uid": user.id, "csrf": "t", "iat": 0, "exp": 1.0}))
    assert anon.get("/api/items").status_code == 401
    anon.cookies.clear()
    anon.cookies.set("lineside_session", real.dumps({"uid": user.id, "csrf": "t", "iat": 0, "exp": 2e9}))
    assert anon.get("/api/items").status_code == 200


def test_secret_is_made_once_with_mode_0600_and_sessions_survive_a_restart(store, storage_dir, items):
    make_user(store, "ana")
    with TestClient(create_app(store, storage_dir)) as first:
        login(first, "ana")
        cookie = first.cookies.get("lineside_session")
    secret = storage_dir / "session.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    before = secret.read_text()
    with TestClient(create_app(store, storage_dir)) as second:
        second.cookies.set("lineside_session", cookie)
        assert second.get("/api/items").status_code == 200
    assert secret.read_text() == before


def test_safe_next_refuses_other_sites():
    assert safe_next("/items/3?x=1") == "/items/3?x=1"
    for bad in ("//evil.example/", "https://evil.example/", "\\\\evil", "/\\evil.example", "", None):
        assert safe_next(bad) == "/"


def test_passwords_are_scrypt_hashed():
    stored = hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret-pass", stored) and not verify_password("s3cret-pasS", stored)
    assert not verify_password("x", "garbage") and not verify_password("x", "scrypt$1$2$3$!!$!!")
    assert hash_password("same") != hash_password("same")  # salted


def test_user_validation(store):
    add_user(store, "ana", PASSWORD)
    with pytest.raises(UserError, match="exists already"):
        add_user(store, "ana", PASSWORD)
    with pytest.raises(UserError, match="role"):
        add_user(store, "ben", PASSWORD, role="root")
    with pytest.raises(UserError, match="too short"):
        add_user(store, "ben", "short")
    with pytest.raises(UserError, match="username"):
        add_user(store, "../ben", PASSWORD)


def test_reviewers_cannot_reach_admin_routes(anon, store, items):
    make_user(store, "ana")
    login(anon, "ana")
    for url in ("/admin", "/api/export?format=coco", "/api/audit", "/api/users"):
        assert anon.get(url).status_code == 403, url
    assert "/admin" not in anon.get("/").text


def test_admin_exports_reviewed_items_as_coco_and_jsonl(anon, store, make_item, jpeg, region):
    store.ingest.add_item(make_item(uncertainty=0.9, regions=[region(), region(x=150, y=160, w=40, h=30,
                                                                             defect_class="spot")]), jpeg(seed=1))
    store.ingest.add_item(make_item(uncertainty=0.8), jpeg(seed=2))
    store.ingest.add_item(make_item(uncertainty=0.7), jpeg(seed=3))
    store.ingest.add_item(make_item(uncertainty=0.1), jpeg(seed=4))  # stays pending: not exported
    make_user(store, "root", role="admin")
    login(anon, "root")
    anon.post("/items/1/review", data={"decision": "accept"})
    anon.post("/items/2/review", data={"decision": "reject"})
    anon.post("/items/3/review", data={"decision": "relabel", "defect_class": "spot"})
    admin = anon.get("/admin")
    assert admin.status_code == 200 and 'href="/api/export?format=coco"' in admin.text and "root" in admin.text

    r = anon.get("/api/export", params={"format": "coco"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "lineside-reviewed-coco.zip" in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        coco = json.loads(zf.read("annotations.json"))
        names = set(zf.namelist())
        assert all(zf.read(img["file_name"])[:2] == b"\xff\xd8" for img in coco["images"])
    assert len(coco["images"]) == 3 and {i["file_name"] for i in coco["images"]} <= names
    labels = {img["frame_id"].rsplit(":", 1)[0] and img["id"]: img["label"] for img in coco["images"]}
    assert sorted(labels.values()) == ["crack", "good", "spot"]
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(cats[ann["category_id"]])
        assert ann["source"] == "model" and ann["area"] == ann["bbox"][2] * ann["bbox"][3]
    by_label = {img["label"]: by_image.get(img["id"], []) for img in coco["images"]}
    assert by_label == {"crack": ["crack", "spot"], "good": [], "spot": ["spot"]}  # accepted / rejected / relabelled

    r = anon.get("/api/export", params={"format": "jsonl"})
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        lines = [json.loads(line) for line in zf.read("items.jsonl").decode().splitlines()]
        assert all(zf.read(rec["image"])[:2] == b"\xff\xd8" for rec in lines)
    assert [(rec["label"], rec["decision"], rec["reviewer"]) for rec in lines] == [
        ("crack", "accept", "root"), ("good", "reject", "root"), ("spot", "relabel", "root")]
    assert anon.get("/api/export", params={"format": "xml"}).status_code == 422
    audit = anon.get("/api/audit").json()
    assert [e["action"] for e in audit if e["action"] == "review"] == ["review"] * 3


def test_users_cli_add_list_disable(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"""
line:
  id: line-1
  source: {{kind: folder, path: {tmp_path}}}
station:
  database_url: sqlite:///{tmp_path / 'db' / 'station.db'}
  storage_dir: {tmp_path / 'images'}
""")
    runner = CliRunner()
    r = runner.invoke(cli_app, ["users", "add", "ana", "--role", "admin", "--password-stdin", "-c", str(config)],
                      input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    assert "user ana added (admin)" in r.output
    r = runner.invoke(cli_app, ["users", "add", "ana", "--password-stdin", "-c", str(config)], input=PASSWORD + "\n")
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(cli_app, ["users", "add", "ben", "-c", str(config)], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["users", "disable", "ben", "-c", str(config)])
    assert r.exit_code == 0 and "disabled" in r.output
    r = runner.invoke(cli_app, ["users", "list", "-c", str(config)])
    assert r.exit_code == 0
    rows = [line.split("\t")[:3] for line in r.output.strip().splitlines()]
    assert rows == [["ana", "admin", "active"], ["ben", "reviewer", "disabled"]]
    store = Store(f"sqlite:///{tmp_path / 'db' / 'station.db'}", tmp_path / "images")
    try:
        assert authenticate(store, "ana", PASSWORD) is not None
    finally:
        store.close()
