"""The store's core: one database (engine from a URL, SQLite's settings, read and write sessions) and its image folder.

SQLite today, PostgreSQL later: the engine comes from a URL, the tables use portable types only.

Durability. The station acknowledges an item to the edge only after ``Ingest.add_item`` has returned, and an ack
tells the edge it may delete its own copy. So a committed item must survive a power cut, otherwise the frame
is lost on both sides. On SQLite that is why every connection runs ``journal_mode=WAL`` with
``synchronous=FULL``: in WAL mode, ``NORMAL`` only syncs at checkpoints, so the last transactions before a
power cut can vanish even though their commits returned; ``FULL`` fsyncs the WAL at every commit. The image
file is written and fsynced (see ``imagefiles``) *before* the row that points at it is committed, so a
committed row always has its image.

Concurrency. The ingest thread and the console write at the same time. Writes on SQLite start with
``BEGIN IMMEDIATE`` (take the write lock up front, wait up to ``busy_timeout``), so a read-then-write
transaction never fails half-way with SQLITE_BUSY when another writer got in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from edge.station import migrations
from edge.station.tables import ReviewItemRow

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _install_sqlite_pragmas(engine: Engine) -> None:
    """Per-connection SQLite settings (see the module docstring), and BEGIN IMMEDIATE for write sessions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not open transactions itself; "begin" below does
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _install_sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The station's database, brought to the schema's head when opened, and the folder of its review images."""

    def __init__(self, database_url: str, storage_dir: Path | str) -> None:
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(database_url)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        migrations.upgrade(self._write_engine)  # new database: created by the migrations; at head: one query

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session whose objects stay readable after it ends; ``write=True``: one transaction, committed when the
        block ends (rolled back on an exception), that holds SQLite's write lock from its first statement."""
        if write:
            with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
                yield s
        else:
            with Session(self.engine, expire_on_commit=False) as s:
                yield s

    def ping(self) -> None:
        """Raise if the database cannot be queried."""
        with self.session() as s:
            s.scalar(select(func.count()).select_from(ReviewItemRow).limit(1))
