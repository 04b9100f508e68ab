"""test_console_review.py again on PostgreSQL: the stats queries (hour buckets, time histograms, NOT EXISTS),
second reviews, good references and the live-arrival counts must mean the same on both databases.

Skipped where no PostgreSQL server can start (see ``pg_support``), failed under CI.
"""

from __future__ import annotations

import pytest
import test_console_review
from pg_support import pg_server, pg_url  # noqa: F401  (fixtures)

SQLITE_ONLY = {"test_upgrade_from_0002_keeps_reviews_and_adds_the_new_columns"}  # writes to the SQLite file directly

for _name, _obj in vars(test_console_review).items():
    if _name.startswith("test_") and callable(_obj) and _name not in SQLITE_ONLY:
        globals()[_name] = _obj
app_client = test_console_review.app_client


@pytest.fixture
def db_url(pg_url: str) -> str:  # noqa: F811
    return pg_url
