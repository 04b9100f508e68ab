"""Helpers for tests that talk to the console as a logged-in user (TestClient or a real server over HTTP)."""

from __future__ import annotations

import re
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from edge.station.store import Store
from edge.station.users import add_user

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no csrf-token meta"
    return match.group(1)


def make_user(store: Store, name: str = "ana", role: str = "reviewer") -> str:
    add_user(store, name, PASSWORD, role)
    return name


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log ``client`` in; its later requests send the CSRF header. Returns the token."""
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    token = csrf_of(client.get("/").text)  # the token rotates at login
    client.headers["X-CSRF-Token"] = token
    return token


def login_opener(base_url: str, username: str, password: str = PASSWORD) -> urllib.request.OpenerDirector:
    """A urllib opener with a logged-in session on a running station."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with opener.open(base_url + "/login", timeout=5) as r:
        token = csrf_of(r.read().decode())
    data = urlencode({"username": username, "password": password, "csrf_token": token}).encode()
    with opener.open(base_url + "/login", data=data, timeout=5) as r:
        assert r.status == 200 and "/login" not in r.url, r.url
    return opener
