"""Alembic migrations of the station database: a new database is built by them, a database at head reopens without
change, a database from before migrations is adopted, and the migrations agree with ``edge/station/tables.py``."""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from edge.station import migrations
from edge.station.store import Store
from edge.station.tables import Base


@contextmanager
def _opened(db: Path, tmp_path: Path) -> Iterator[Store]:
    """The station's store on `db` (which runs the migrations to the head), closed afterwards."""
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    try:
        yield store
    finally:
        store.close()


def _database_at(db: Path, revision: str) -> Path:
    """A SQLite database built by the migrations up to ``revision`` only: what an older station left."""
    from alembic import command

    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        cfg = migrations.alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()
    return db


def _png_8x8() -> str:
    ok, data = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    assert ok
    return base64.b64encode(data.tobytes()).decode("ascii")


def _insert_item(conn: sqlite3.Connection, frame_id: str, status: str) -> None:
    """One crack item of line-1, written as an older station wrote it (its columns of that time only)."""
    conn.execute("INSERT INTO review_items (frame_id, line_id, source_id, seq, captured_wall, decided_wall, "
                 "received_wall, width, height, verdict, class_scores, anomaly_score, anomaly_threshold, "
                 "uncertainty, reason, pack_version, profile_version, image_path, status) VALUES (?, 'line-1', "
                 "'cam0', 1, 1, 1, 1, 10, 10, 'crack', '{\"good\": 0.4, \"crack\": 0.6}', 1, 0.5, 0.5, "
                 "'uncertain', 'p', 'q', ?, ?)", (frame_id, f"line-1/{frame_id}.jpg", status))


def _schema(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT type, name, coalesce(sql, '') FROM sqlite_master"))


def test_a_new_database_gets_every_table_at_head(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'new.db'}", tmp_path / "images")
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert migrations.current_revision(store.engine) == migrations.head_revision()
    finally:
        store.close()


def test_a_database_at_head_reopens_without_change(tmp_path: Path, make_item, jpeg):
    db = tmp_path / "station.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    store.ingest.add_item(make_item(), jpeg())
    store.close()
    before = _schema(db)
    again = Store(f"sqlite:///{db}", tmp_path / "images")
    try:
        assert migrations.upgrade(again.engine) == migrations.head_revision()  # the fast path: nothing to do
        assert again.queue.counts()["items"] == 1
    finally:
        again.close()
    assert _schema(db) == before


def test_the_migrations_agree_with_the_tables(tmp_path: Path):
    """`alembic check`: autogenerate finds nothing to add, drop or alter between the migrated schema and the models.
    When this fails after a change to tables.py, write the revision (see edge.station.migrations)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'check.db'}")
    try:
        migrations.upgrade(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diffs == [], "tables.py and the migrations differ; add a revision"


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path, make_item, jpeg):
    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)  # what Store did before migrations existed
    engine.dispose()
    with _opened(db, tmp_path) as store:
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        assert store.ingest.add_item(make_item(), jpeg())


def test_first_revision_then_upgrade_keeps_the_data(tmp_path: Path, make_item, jpeg):
    db = _database_at(tmp_path / "v1.db", migrations.FIRST_REVISION)
    assert {"review_items", "regions", "reviews"} <= set(inspect(create_engine(f"sqlite:///{db}")).get_table_names())
    with _opened(db, tmp_path) as store:
        item = make_item()
        assert store.ingest.add_item(item, jpeg())
        assert store.ingest.has_frame(item.frame_id)


def test_upgrade_from_0002_keeps_reviews_and_adds_the_new_columns(tmp_path: Path, make_item, jpeg):
    db = _database_at(tmp_path / "v2.db", "0002")
    with sqlite3.connect(db) as conn:
        _insert_item(conn, "f", "reviewed")
        conn.execute("INSERT INTO reviews (item_id, decision, final_verdict, defect_class, reviewer, created_wall) "
                     "VALUES (1, 'accept', 'crack', 'crack', 'ana', 5)")
    with _opened(db, tmp_path) as store:
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        item = store.queue.get_item(1)
        assert item is not None and item.second_review_of is None and item.heatmap_png is None
        review = item.reviews[0]
        assert (review.boxes, review.comment, review.second_review) == (None, None, False)
        assert store.ingest.add_item(make_item(heatmap_png=_png_8x8()), jpeg())


def test_upgrade_from_0004_keeps_items_single_and_adds_look_alike_groups(tmp_path: Path, make_item, jpeg):
    from edge.transport.schema import embedding_b64

    db = _database_at(tmp_path / "old.db", "0004")
    with sqlite3.connect(db) as conn:
        _insert_item(conn, "l:c:b:1", "pending")
    with _opened(db, tmp_path) as store:
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        old = store.queue.pending()[0]
        assert old.frame_id == "l:c:b:1" and old.group_id is None
        vector = np.ones(256, np.float32)
        store.ingest.add_items([(make_item(embedding=embedding_b64(vector)), jpeg()) for _ in range(2)])
        new = [i for i in store.queue.pending(limit=10) if i.id != old.id]
        assert len({i.group_id for i in new}) == 1 and new[0].group_id is not None
    columns = {t: {c["name"] for c in inspect(create_engine(f"sqlite:///{db}")).get_columns(t)}
               for t in ("review_items", "reviews", "item_groups", "embeddings")}
    assert "group_id" in columns["review_items"] and "group_id" in columns["reviews"]
    assert {"centroid", "members", "last_wall"} <= columns["item_groups"] and "vector" in columns["embeddings"]


def test_a_database_from_a_newer_version_is_a_clear_error(tmp_path: Path):
    db = tmp_path / "future.db"
    Store(f"sqlite:///{db}", tmp_path / "images").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(migrations.MigrationError, match="'9999'.*newer version"):
        Store(f"sqlite:///{db}", tmp_path / "images")


def test_migrations_cli_reports_head(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    subprocess.run([sys.executable, "-m", "edge.station.migrations", "--url", url, "upgrade", "head"], check=True,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-m", "edge.station.migrations", "--url", url, "current"], check=True,
                         capture_output=True, text=True)
    assert migrations.head_revision() in out.stdout + out.stderr


def test_migrations_ship_with_the_package():
    """The wheel carries what Alembic needs at run time (package data in pyproject.toml)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["edge"]
    assert "station/migrations/script.py.mako" in data and "station/migrations/versions/*.py" in data
    assert (migrations.MIGRATIONS_DIR / "versions").is_dir()
