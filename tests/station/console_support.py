"""Helpers for tests that talk to the console as a logged-in user (TestClient or a real server over HTTP)."""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import zmq
from fastapi.testclient import TestClient

from edge.config import StationConfig
from edge.station.server import run_station
from edge.station.store import Store
from edge.station.users import add_user
from edge.transport.schema import ReviewItem, encode_item

PASSWORD = "correct horse battery"
TEST_OUTPUT = Path(__file__).resolve().parents[2] / "test-output"  # screenshots and exports of browser tests
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; a test never lets a tool download its own browser
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def need_chromium() -> None:
    """Skip a browser test where Chromium is missing — fail instead on CI, where it must be there."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium package to run the console browser test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
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


@contextmanager
def running_station(cfg: StationConfig) -> Iterator[tuple[str, str]]:
    """The real station (ingest + console) on a thread; yields (console URL, ingest endpoint); stops it after."""
    stop, ready = threading.Event(), threading.Event()
    urls: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_station(cfg, stop, lambda console, ingest: (urls.extend([console, ingest]), ready.set()))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="test-station", daemon=True)
    thread.start()
    assert ready.wait(30), "station did not become ready"
    assert not errors, errors
    yield urls[0], urls[1]
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "station did not stop"
    assert not errors, errors


def send_items(endpoint: str, items: list[tuple[ReviewItem, bytes]]) -> None:
    """Send items to a running station's ingest as the edge does (a real DEALER), waiting for each ack."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for item, jpeg in items:
            sock.send_multipart(encode_item(item, jpeg))
            assert sock.poll(10_000, zmq.POLLIN), f"no ack for {item.frame_id}"
            assert sock.recv_multipart() == [b"ack", item.frame_id.encode()]
    finally:
        sock.close()
        ctx.term()


def browser_login(page: Any, console: str, name: str, password: str = PASSWORD) -> None:
    """Log a Playwright page in with the keyboard: type the user, Tab, the password, Enter."""
    page.goto(console + "/login")
    page.locator("#username").focus()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(console + "/")

