"""A throwaway PostgreSQL server for the store tests: Debian's binaries, a cluster in a temp dir, one port.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user the Debian package
creates. Trust authentication on 127.0.0.1 only, fsync off (the tests check SQL behaviour, not the server's
durability; the station's own durability argument for PostgreSQL is its default synchronous_commit=on). Where the
server cannot start, the PostgreSQL tests are skipped — and fail under CI (CI=true), which must run them
(``make pg`` / ``.ci/run`` install the Debian package).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.tools.net import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
    pytest.skip(f"no PostgreSQL server here: {reason}")


class PgServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lineside-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                         "--encoding=UTF8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        opts = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -F -c max_connections=200"
        done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                         str(self.root / "server.log"), "-w", "-t", "60", "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text()[-800:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()[-500:]} {log}")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed (pip install -e '.[dev]')")
    bindir = _bindir()
    if bindir is None:
        _unavailable("initdb not found (apt-get install postgresql)")
        raise AssertionError("unreachable")
    server = PgServer(bindir)
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(server.root, ignore_errors=True)
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.new_database()


