"""The spine's lifecycle on a PostgreSQL store: a real PostgreSQL server on 127.0.0.1."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.harness import EasServer, sklearn_service, write_json
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_lifecycle_on_postgresql(pg, iris, tmp_path):
    started = time.monotonic()
    url = pg.create_database("eas_e2e")
    srv = EasServer(tmp_path / "eas-data", extra_args=("--store", url))
    try:
        srv.start()
        health = httpx.get(f"{srv.url}/healthz").json()
        assert health["store"] == "postgresql"
        assert not (tmp_path / "eas-data" / "eas.db").exists(), "no SQLite file when a URL is given"

        srv.eascmd("create", str(write_json(tmp_path / "iris.json", sklearn_service("iris_pg", iris["path"]))))
        info = srv.desc("iris_pg")
        assert info["Status"] == "Running"
        token = info["AccessToken"]
        body = json.dumps({"instances": iris["rows"]})
        resp = srv.predict("iris_pg", body, token)
        assert resp.status_code == 200 and resp.json()["predictions"] == iris["expected"]
        assert httpx.get(f"{srv.url}/healthz").json()["leader"] is True

        srv.eascmd("stop", "iris_pg")
        assert srv.predict("iris_pg", body, token).status_code == 503
        srv.eascmd("start", "iris_pg")
        assert srv.predict("iris_pg", body, token).json()["predictions"] == iris["expected"]

        # The state really is in PostgreSQL: read it there, not through the server.
        import psycopg

        with psycopg.connect(url) as conn:
            status, stored_token = conn.execute(
                "SELECT status, token FROM services WHERE name = 'iris_pg'").fetchone()
            kinds = [r[0] for r in conn.execute(
                "SELECT type FROM events WHERE service = 'iris_pg' ORDER BY id").fetchall()]
            holder = conn.execute("SELECT holder FROM leases WHERE name = 'controller'").fetchone()[0]
        assert (status, stored_token) == ("Running", token)
        assert kinds[0] == "Created" and "Stopped" in kinds and "Running" in kinds
        assert holder == (tmp_path / "eas-data" / "server-id").read_text().strip()

        srv.eascmd("delete", "iris_pg", "-y")
        assert srv.predict("iris_pg", body, token).status_code == 404
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM services").fetchone()[0] == 0
    finally:
        srv.stop()
    print(f"\nPostgreSQL lifecycle (server start to delete): {time.monotonic() - started:.1f} s")
