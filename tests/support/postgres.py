"""A real PostgreSQL server for tests: initdb in a temp dir, bound to 127.0.0.1 on a free port.

The Debian `postgresql` package provides the binaries (`make pg-deps` installs it when
missing). PostgreSQL refuses to run as root, so under root the server runs as the
`postgres` user. Everything lives in one temp dir, removed on stop; `pg_ctl stop -m
immediate` ends the server and its children, so none outlives the test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

USER = "eas"


def find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise RuntimeError(f"PostgreSQL's {name} not found: run 'make pg-deps' (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="eas-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._run_as: dict[str, Any] = {}
        self.started = False

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, **self._run_as)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                               f"{self.log_tail()}")
        return res

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")  # created by the Debian package
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                            "env": {**os.environ, "HOME": str(self.dir)}}
        self._run(find_bin("initdb"), "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            try:
                self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 9)
            time.sleep(0.5)
        except (OSError, ValueError, IndexError):
            pass

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(name="pg", scope="module")
def pg_fixture() -> Iterator[PostgresServer]:
    """One real PostgreSQL per test module (import this name to register the fixture)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="target", params=["sqlite", "postgresql"])
def target_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind (what two servers would share)."""
    if request.param == "sqlite":
        return str(tmp_path / "eas.db")
    server: PostgresServer = request.getfixturevalue("pg")
    return server.create_database(f"t_{uuid.uuid4().hex[:10]}")
