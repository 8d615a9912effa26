"""The store: the single source of truth for every service's desired and observed state.

Ray is a cache of what is written here. SQLite (standard library) in WAL mode keeps
it in one file under the data dir; the SQL is kept to what PostgreSQL also runs.
Every write is one transaction, so a `kill -9` at any moment leaves a consistent store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name        TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL,
    spec        TEXT NOT NULL,
    token       TEXT NOT NULL,
    desired     TEXT NOT NULL,
    status      TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    version     INTEGER NOT NULL DEFAULT 1,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    service     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, version)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    type        TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_service ON events (service, id);
CREATE TABLE IF NOT EXISTS traffic (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    token       TEXT NOT NULL,
    backends    TEXT NOT NULL,
    mirror      TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
"""

#: Desired states the controller drives toward.
RUNNING, STOPPED, DELETED = "Running", "Stopped", "Deleted"


@dataclass
class ServiceRecord:
    name: str
    service_id: str
    spec: dict[str, Any]
    token: str
    desired: str
    status: str
    message: str = ""
    version: int = 1
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class TrafficRecord:
    """What an endpoint name sends where, when that is not simply "its own service".

    kind "service": a service's endpoint shared with partners (blue-green, A/B);
    kind "group": a group endpoint over member services; kind "closed": a partner's own
    endpoint after release. `mirror` copies a share of requests to a shadow service.
    """

    name: str
    kind: str
    token: str
    backends: list[tuple[str, int]]
    mirror: tuple[str, int] | None = None
    created_at: float = field(default_factory=time.time)


class NotFound(KeyError):
    pass


class AlreadyExists(ValueError):
    pass


class Store:
    """Thread-safe access to the state database (one connection, serialised writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions -------------------------------------------------------------

    def _tx(self) -> "_Tx":
        return _Tx(self)

    # -- services -----------------------------------------------------------------

    def create_service(self, name: str, spec: dict[str, Any], token: str) -> ServiceRecord:
        now = time.time()
        rec = ServiceRecord(
            name=name,
            service_id=f"eas-m-{uuid.uuid4().hex[:12]}",
            spec=spec,
            token=token,
            desired=RUNNING,
            status="Creating",
            created_at=now,
            updated_at=now,
        )
        with self._tx() as db:
            if db.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(name)
            db.execute(
                "INSERT INTO services (name, service_id, spec, token, desired, status, message,"
                " version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, rec.service_id, json.dumps(spec), token, rec.desired, rec.status, "", 1, now, now),
            )
            db.execute(
                "INSERT INTO versions (service, version, spec, created_at) VALUES (?, 1, ?, ?)",
                (name, json.dumps(spec), now),
            )
            self._event(db, name, "Created", "service created")
        return rec

    def get(self, name: str) -> ServiceRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(name)
        return _record(row)

    def list(self) -> list[ServiceRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM services ORDER BY created_at").fetchall()
        return [_record(r) for r in rows]

    def update_spec(self, name: str, spec: dict[str, Any], new_version: bool, event: str,
                    token: str | None = None) -> ServiceRecord:
        """Store a changed spec; a model or processor change also records a new version."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT version FROM services WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(name)
            version = row["version"]
            if new_version:
                latest = db.execute(
                    "SELECT MAX(version) AS v FROM versions WHERE service = ?", (name,)
                ).fetchone()["v"] or 0
                version = latest + 1
                db.execute(
                    "INSERT INTO versions (service, version, spec, created_at) VALUES (?, ?, ?, ?)",
                    (name, version, json.dumps(spec), now),
                )
            db.execute(
                "UPDATE services SET spec = ?, version = ?, updated_at = ?,"
                " token = COALESCE(?, token) WHERE name = ?",
                (json.dumps(spec), version, now, token, name),
            )
            self._event(db, name, "Updated", event)
        return self.get(name)

    def set_desired(self, name: str, desired: str, event: str) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE services SET desired = ?, updated_at = ? WHERE name = ?",
                (desired, time.time(), name),
            )
            if cur.rowcount == 0:
                raise NotFound(name)
            self._event(db, name, desired, event)

    def set_status(self, name: str, status: str, message: str = "") -> bool:
        """Record what the controller observed; returns True when it changed."""
        with self._tx() as db:
            row = db.execute("SELECT status, message FROM services WHERE name = ?", (name,)).fetchone()
            if row is None or (row["status"] == status and row["message"] == message):
                return False
            db.execute(
                "UPDATE services SET status = ?, message = ? WHERE name = ?", (status, message, name)
            )
            if row["status"] != status:
                text = f"{row['status']} -> {status}" + (f": {message}" if message else "")
                self._event(db, name, "Status", text)
            return True

    def remove(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM services WHERE name = ?", (name,))
            db.execute("DELETE FROM versions WHERE service = ?", (name,))
            self._event(db, name, "Deleted", "service deleted")

    def version_spec(self, name: str, version: int) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute(
                "SELECT spec FROM versions WHERE service = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            raise NotFound(f"{name} version {version}")
        return json.loads(row["spec"])

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT version, spec, created_at FROM versions WHERE service = ? ORDER BY version", (name,)
            ).fetchall()
        return [{"version": r["version"], "spec": json.loads(r["spec"]), "created_at": r["created_at"]} for r in rows]

    def set_current_version(self, name: str, version: int, event: str,
                            spec: dict[str, Any] | None = None) -> None:
        """Point a service at one of its recorded versions (rollback or roll forward).

        `spec` is that version's spec with today's operational settings merged in.
        """
        spec = spec if spec is not None else self.version_spec(name, version)
        with self._tx() as db:
            db.execute("UPDATE services SET spec = ?, version = ?, updated_at = ? WHERE name = ?",
                       (json.dumps(spec), version, time.time(), name))
            self._event(db, name, "Version", event)

    # -- traffic ------------------------------------------------------------------

    def put_traffic(self, rec: TrafficRecord, event_service: str, event: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO traffic (name, kind, token, backends, mirror, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, token = excluded.token, "
                "backends = excluded.backends, mirror = excluded.mirror",
                (rec.name, rec.kind, rec.token, json.dumps(rec.backends),
                 json.dumps(rec.mirror) if rec.mirror else "", rec.created_at),
            )
            self._event(db, event_service, "Traffic", event)

    def traffic(self) -> dict[str, TrafficRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM traffic").fetchall()
        return {r["name"]: TrafficRecord(
            name=r["name"], kind=r["kind"], token=r["token"],
            backends=[(b[0], int(b[1])) for b in json.loads(r["backends"])],
            mirror=tuple(json.loads(r["mirror"])) if r["mirror"] else None,  # type: ignore[arg-type]
            created_at=r["created_at"],
        ) for r in rows}

    def shared_row(self, service: str) -> TrafficRecord | None:
        """The shared endpoint (not its own) a service takes traffic from, if any."""
        for row in self.traffic().values():
            if row.kind == "service" and row.name != service and any(s == service for s, _ in row.backends):
                return row
        return None

    def weight_of(self, service: str) -> int:
        """What `ls` shows as WEIGHT: the share of its endpoint's traffic a service gets."""
        row = self.shared_row(service) or self.traffic().get(service)
        if row is None or row.kind != "service":
            return 100
        total = sum(w for _, w in row.backends) or 1
        return round(100 * dict(row.backends).get(service, 0) / total)

    def delete_traffic(self, name: str, event_service: str, event: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM traffic WHERE name = ?", (name,))
            self._event(db, event_service, "Traffic", event)

    def latest_version(self, name: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(version) AS v FROM versions WHERE service = ?", (name,)
            ).fetchone()
        return int(row["v"] or 0)

    # -- events -------------------------------------------------------------------

    def add_event(self, service: str, type_: str, message: str) -> None:
        with self._tx() as db:
            self._event(db, service, type_, message)

    def events(self, service: str, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, type, message FROM events WHERE service = ? ORDER BY id DESC LIMIT ?",
                (service, limit),
            ).fetchall()
        return [dict(r) for r in reversed(rows)]

    @staticmethod
    def _event(db: sqlite3.Connection, service: str, type_: str, message: str) -> None:
        db.execute(
            "INSERT INTO events (service, at, type, message) VALUES (?, ?, ?, ?)",
            (service, time.time(), type_, message),
        )

    # -- settings -----------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


class _Tx:
    """`with store._tx() as db:` runs the block as one transaction under the store lock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        self.store._db.execute("BEGIN IMMEDIATE")
        return self.store._db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()


def _record(row: sqlite3.Row) -> ServiceRecord:
    return ServiceRecord(
        name=row["name"],
        service_id=row["service_id"],
        spec=json.loads(row["spec"]),
        token=row["token"],
        desired=row["desired"],
        status=row["status"],
        message=row["message"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
