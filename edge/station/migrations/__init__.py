"""Alembic migrations of the station database, from the first schema on; ``upgrade`` brings any database to head.

The Store calls ``upgrade`` when it opens: a new database is created by running every revision (there is no
separate ``create_all`` path, so the schema a site runs is always the one the migrations make), a database at head
costs one query, and a database made by ``create_all`` before migrations existed (it has ``review_items`` but no
``alembic_version``) is stamped at the first revision and upgraded from there.

A schema change is a new revision: edit ``edge/station/tables.py``, then
``python -m edge.station.migrations --url sqlite:///tmp.db upgrade head`` and
``python -m edge.station.migrations --url sqlite:///tmp.db revision --autogenerate --rev-id 0003 -m "what changed"``
(numbered ids keep the history readable), and review the generated file.
``tests/station/test_station_migrations.py`` fails while the tables and the migrations disagree.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent
FIRST_REVISION = "0001"


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this code needs; the text says why."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at these migrations (no alembic.ini needed, so an installed wheel works)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:
        raise MigrationError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except CommandError:  # alembic raises for an unknown id rather than returning None
        return False


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Bring the database to head in one transaction; returns the revision it was at (None: new or pre-Alembic).

    Pass a write engine (BEGIN IMMEDIATE on SQLite) so that two processes opening one new database do not both
    try to create it: the second waits for the first, then finds head.
    """
    head = head_revision()
    with engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return current  # the usual start: one query
        if current is not None and not _known(current):
            raise MigrationError(f"database is at schema revision {current!r}, which this version of lineside does "
                                 f"not know (head is {head!r}); was it written by a newer version?")
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        if current is None and inspect(conn).has_table("review_items"):
            log.info("station database predates migrations: stamping revision %s", FIRST_REVISION)
            command.stamp(cfg, FIRST_REVISION)
        log.info("station database: migrating from %s to %s", current or "an empty database", head)
        command.upgrade(cfg, "head")
    return current
