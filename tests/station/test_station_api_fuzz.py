"""The console's HTTP API fuzzed from its own OpenAPI schema with schemathesis: every operation, with data that
fits the schema and data that does not, logged in (session cookie and CSRF header) and not. No response is a
server error (≥ 500): bad input is a 4xx with one log line, never a traceback.

CI's short form: ``QUICK_EXAMPLES`` per operation, generation mode and login state (≥ 1,000 requests in all,
derandomized: the same requests every run). The long form: ``python -m pytest -m slow
tests/station/test_station_api_fuzz.py`` (``SLOW_EXAMPLES``), or any count with ``LINESIDE_FUZZ_EXAMPLES=N``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from edge.station.auth import COOKIE, CSRF_HEADER
from edge.station.console import create_app
from edge.station.store import Store
from edge.station.users import add_user
from edge.transport.schema import ReviewItem

QUICK_EXAMPLES = 20
SLOW_EXAMPLES = 250


def _app(store: Store, storage_dir: Path, make_item: Callable[..., ReviewItem], jpeg: Callable[..., bytes]
         ) -> tuple[FastAPI, dict[str, Any]]:
    """The console over a store with a few items; the credentials of a logged-in admin (cookie + CSRF header)."""
    for _ in range(5):  # ids 1-5 exist: generated small ids hit real rows, not only 404s
        store.ingest.add_item(make_item(), jpeg())
    user = add_user(store, "fuzz", "fuzz password 123", "admin")
    app = create_app(store, storage_dir)
    app.state.console.closing.set()  # the live stream answers and ends at once instead of staying open
    codec = app.state.console.codec
    session = codec.new(user.id)
    return app, {"cookies": {COOKIE: codec.dumps(session)}, "headers": {CSRF_HEADER: session["csrf"]}}


def _fuzz(app: FastAPI, credentials: dict[str, Any], examples: int) -> Counter[str]:
    with TestClient(app, cookies=credentials["cookies"]) as client:
        spec = client.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    seen: Counter[str] = Counter()

    def run(operation: Any, mode: GenerationMode, extra: dict[str, Any]) -> None:
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            response = case.call(app=app, **extra)
            where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200}"
            body = response.content.decode(errors="replace")
            assert response.status_code < 500, f"{response.status_code} for {where}: {body[:500]}"
            assert "Traceback" not in body, where
            seen[f"{response.status_code // 100}xx"] += 1
            seen["requests"] += 1

        try:
            call()
        except Unsatisfiable:  # an operation with nothing to get wrong (no parameters, no body) has no negatives
            assert mode == GenerationMode.NEGATIVE
            seen["without_negatives"] += 1

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for extra in (credentials, {}):  # logged in, and not
                run(result.ok(), mode, extra)
                seen["runs"] += 1
    return seen


def _check(seen: Counter[str], caplog: pytest.LogCaptureFixture, minimum: int) -> None:
    assert seen["requests"] >= minimum, seen
    assert seen["5xx"] == 0
    assert seen["2xx"] > 0 and seen["4xx"] > 0, seen  # both the happy and the refused paths were reached
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()


def test_the_api_fuzzed_from_its_schema_answers_no_server_error(
        store: Store, storage_dir: Path, make_item: Callable[..., ReviewItem], jpeg: Callable[..., bytes],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    app, credentials = _app(store, storage_dir, make_item, jpeg)
    examples = int(os.environ.get("LINESIDE_FUZZ_EXAMPLES", QUICK_EXAMPLES))
    _check(_fuzz(app, credentials, examples), caplog, 1_000 if examples >= QUICK_EXAMPLES else 1)


@pytest.mark.slow
def test_the_api_fuzzed_at_length(store: Store, storage_dir: Path, make_item: Callable[..., ReviewItem],
                                  jpeg: Callable[..., bytes], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    app, credentials = _app(store, storage_dir, make_item, jpeg)
    _check(_fuzz(app, credentials, SLOW_EXAMPLES), caplog, 10_000)


@pytest.mark.parametrize("path", ["/items/9223372036854775808", "/api/items/99999999999999999999999999",
                                  "/images/18446744073709551616", "/items/-9223372036854775809",
                                  "/items/" + "9" * 5000])
def test_an_id_beyond_64_bits_is_a_404_with_one_log_line(
        path: str, store: Store, storage_dir: Path, make_item: Callable[..., ReviewItem],
        jpeg: Callable[..., bytes], caplog: pytest.LogCaptureFixture) -> None:
    app, credentials = _app(store, storage_dir, make_item, jpeg)
    caplog.set_level(logging.INFO)
    with TestClient(app, cookies=credentials["cookies"], headers=credentials["headers"]) as client:
        response = client.get(path)
        assert response.status_code == 404 and "Traceback" not in response.text
        assert client.get("/api/items/9223372036854775807").status_code == 404  # the largest: no such row
        assert client.post(path.replace("/images/", "/items/") + "/lease").status_code == 404
    refused = [r.getMessage() for r in caplog.records if "refused with 404" in r.getMessage()]
    assert len(refused) == 3 and not any(r.exc_info for r in caplog.records)


def test_a_number_too_large_for_the_database_elsewhere_is_a_422(
        store: Store, storage_dir: Path, make_item: Callable[..., ReviewItem], jpeg: Callable[..., bytes]) -> None:
    app, credentials = _app(store, storage_dir, make_item, jpeg)
    with TestClient(app, cookies=credentials["cookies"], headers=credentials["headers"]) as client:
        assert client.get("/api/items", params={"offset": 2**64}).status_code == 422
        assert client.post("/next", data={"skip": str(2**70)}, follow_redirects=False).status_code in (303, 422)
