"""The store, ingest, review-queue and retention tests again, on a real PostgreSQL server.

The station reaches PostgreSQL through the same SQLAlchemy code by URL (``postgresql+psycopg://…``). Rather than
copy tests, this module takes the SQLite suites' test functions as they are and runs them here, where the
``db_url`` fixture is a fresh database on a throwaway PostgreSQL server (``pg_support``) instead of a SQLite file:
every ``store``, ``ingest`` and ``dealer`` fixture built on it follows. Tests about SQLite itself (WAL pragmas, the
checkpoint, a tmpfs-sized SQLite file) are left out; the few PostgreSQL-only checks are at the bottom.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import test_console_queue
import test_retention
import test_station_groups
import test_station_ingest
import test_station_store
import test_summaries
import test_training_export
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pg_support import pg_server, pg_url  # noqa: F401  (fixtures)
from sqlalchemy import create_engine, func, inspect, select

from edge.station import migrations
from edge.station.ingest import IngestServer, sqlite_wal_checkpoint
from edge.station.store import Store
from edge.station.tables import Base, ReviewItemRow

SQLITE_ONLY = {
    "test_sqlite_is_wal_with_full_sync_and_foreign_keys",  # PRAGMAs
    "test_min_free_watermark_on_a_real_small_file_system",  # a SQLite file on a 4 MB tmpfs
    "test_station_start_removes_what_a_crash_left",  # run_station with its own SQLite URL
    "test_opens_the_database_from_a_path_a_url_or_the_station_config",  # SQLite path handling
}


def _adopt(module: Any) -> None:
    for name, obj in vars(module).items():
        if name.startswith("test_") and callable(obj) and name not in SQLITE_ONLY:
            globals()[name] = obj


for _module in (test_station_store, test_station_ingest, test_retention, test_training_export, test_console_queue,
                test_summaries, test_station_groups):
    _adopt(_module)

# fixtures those tests use that live in their own modules
app, ana, ben, five = test_console_queue.app, test_console_queue.ana, test_console_queue.ben, test_console_queue.five
line = test_training_export.line
runs = test_station_groups.runs


@pytest.fixture
def db_url(pg_url: str) -> str:  # noqa: F811
    return pg_url


def test_a_new_postgres_database_is_migrated_to_head_and_agrees_with_the_tables(pg_url: str,  # noqa: F811
                                                                               tmp_path: Path) -> None:
    store = Store(pg_url, tmp_path / "images")
    try:
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        assert {"review_items", "regions", "reviews", "users", "leases", "audit_log"} <= set(
            inspect(store.engine).get_table_names())
        with store.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diffs == []
    finally:
        store.close()
    again = Store(pg_url, tmp_path / "images")  # at head: opens without change
    again.close()


def test_two_stores_on_one_postgres_database_store_each_frame_once(pg_url: str, tmp_path: Path,  # noqa: F811
                                                                   make_item, jpeg) -> None:
    """Two station processes (here: two engines) racing on the same frames: the UNIQUE constraint settles it."""
    stores = [Store(pg_url, tmp_path / "images") for _ in range(2)]
    items = [make_item() for _ in range(40)]
    results: list[list[bool]] = [[], []]
    barrier = threading.Barrier(2)

    def run(k: int) -> None:
        barrier.wait()
        for start in range(0, 40, 8):
            results[k] += stores[k].ingest.add_items([(item, jpeg()) for item in items[start:start + 8]])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert [a or b for a, b in zip(*results, strict=True)] == [True] * 40
        assert sum(results[0]) + sum(results[1]) == 40
        with stores[0].session() as s:
            assert s.scalar(select(func.count()).select_from(ReviewItemRow)) == 40
    finally:
        for s in stores:
            s.close()


def test_sqlite_only_maintenance_is_a_no_op_on_postgres(store: Store) -> None:
    assert store.engine.dialect.name == "postgresql"
    assert sqlite_wal_checkpoint(store.engine) is True  # nothing to checkpoint: PostgreSQL manages its own WAL
    server = IngestServer(store.ingest, "tcp://127.0.0.1:0", checkpoint=lambda: sqlite_wal_checkpoint(store.engine))
    server.stop()


def test_the_postgres_url_is_what_the_store_runs_on(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert engine.dialect.name == "postgresql"
    finally:
        engine.dispose()


@pytest.mark.parametrize("scenario", ["station_kill", "dup_reorder"])
def test_fault_scenarios_on_postgres(scenario: str, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Real station processes killed -9 / a link that duplicates and reorders, with PostgreSQL as the store."""
    from edge.tools.faults.harness import FaultOptions
    from edge.tools.faults.scenarios import results_table, run_scenario

    result = run_scenario(scenario, tmp_path / scenario, FaultOptions(frames=300, rate=250.0, kills=2,
                                                                      database_url=pg_url, timeout_s=90.0))
    assert result.ok, results_table([result])
