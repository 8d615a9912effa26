"""The store: the single source of truth for every service's desired and observed state.

Ray is a cache of what is written here. SQLite (standard library) in WAL mode keeps
it in one file under the data dir; a `postgresql://` URL puts it on PostgreSQL (psycopg 3,
the `postgres` extra) so several eas-servers can share it. The SQL is one text for both:
what differs (placeholders, the auto-increment column, how a write transaction starts,
row locks, the database clock) lives in the two `_Dialect`s below and nowhere else.
Every write is one transaction, so a `kill -9` at any moment leaves a consistent store.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from eas.sources.redact import redact_text

#: Events kept per service (older ones are pruned as new ones are written); env EAS_EVENTS_PER_SERVICE.
MAX_EVENTS_PER_SERVICE = int(os.environ.get("EAS_EVENTS_PER_SERVICE", "1000"))

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
    id          {autoid},
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
    created_at  DOUBLE PRECISION NOT NULL,
    mode        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    term        INTEGER NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS demand (
    service     TEXT PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS backflow (
    id          {autoid},
    service     TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS backflow_by_service ON backflow (service, id);
CREATE TABLE IF NOT EXISTS jobs (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    run         INTEGER NOT NULL DEFAULT 0,
    total       INTEGER,
    next_run    DOUBLE PRECISION,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS job_items (
    job         TEXT NOT NULL,
    run         INTEGER NOT NULL,
    item        TEXT NOT NULL,
    ok          INTEGER NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, run, item)
);
CREATE TABLE IF NOT EXISTS queue_entries (
    queue       TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    tags        TEXT NOT NULL,
    data        {blob} NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    priority    INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    taken_by    TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (queue, idx)
);
CREATE INDEX IF NOT EXISTS queue_entries_by_request ON queue_entries (queue, request_id);
CREATE INDEX IF NOT EXISTS queue_entries_waiting ON queue_entries (queue, taken_by, priority, idx);
CREATE TABLE IF NOT EXISTS queue_heads (
    queue       TEXT PRIMARY KEY,
    last_index  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS access_keys (
    id          TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    role        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL
);
"""

#: Columns added since the first schema: (table, column, declaration). Added to older
#: stores when they open (CREATE TABLE IF NOT EXISTS leaves existing tables alone).
ADDED_COLUMNS = (
    ("traffic", "mode", "TEXT NOT NULL DEFAULT ''"),
)


class Desired(StrEnum):
    """The state a user asked for; the controller drives toward it."""

    RUNNING = "Running"
    STOPPED = "Stopped"
    DELETED = "Deleted"


RUNNING, STOPPED, DELETED = Desired.RUNNING, Desired.STOPPED, Desired.DELETED


class Status(StrEnum):
    """The observed status of a service, as EAS names it (what `eascmd ls` shows)."""

    CREATING = "Creating"
    WAITING = "Waiting"
    RUNNING = "Running"
    UPDATING = "Updating"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"
    FAILED = "Failed"
    SLEEPING = "Sleeping"


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
    `mode` of a group: "auto" (EAS TrafficMode auto: members weighted by their running
    instances, the gateway's weights follow every pass) or "" (customized: the weights given).
    """

    name: str
    kind: str
    token: str
    backends: list[tuple[str, int]]
    mirror: tuple[str, int] | None = None
    created_at: float = field(default_factory=time.time)
    mode: str = ""


@dataclass
class AccessKeyRecord:
    """A management API credential: an AccessKey pair with a role ("admin" or "readonly")."""

    id: str
    secret: str
    role: str
    description: str = ""
    created_at: float = field(default_factory=time.time)


class NotFound(KeyError):
    pass


class AlreadyExists(ValueError):
    pass


@dataclass(frozen=True)
class Fence:
    """The lease term a controller acts under: its writes pass only while it is current."""

    lease: str
    holder: str
    term: int


class Fenced(RuntimeError):
    """A fenced write refused: the writer's lease term is no longer current (a deposed leader)."""


class Store:
    """Thread-safe access to the state database (one connection, serialised writes).

    `target` is a SQLite file path or a `postgresql://user:pass@host:port/db` URL.
    """

    def __init__(self, target: str | Path, max_events: int = MAX_EVENTS_PER_SERVICE) -> None:
        self.path = str(target)
        self.max_events = max(1, max_events)
        """Events kept per service; older ones are pruned at each new one."""
        self._lock = threading.RLock()
        self._dialect: _Dialect = _Postgres(self.path) if is_postgres_url(self.path) else _Sqlite(self.path)
        self._db = _Conn(self._dialect)
        with self._tx() as db:
            # Stores from before tokens lived in one place kept a copy per traffic row.
            db.execute("UPDATE traffic SET token = '' WHERE kind <> 'group' AND token <> ''"
                       " AND name IN (SELECT name FROM services)")

    @property
    def kind(self) -> str:
        """"sqlite" or "postgresql": what `eas-server` logs and /healthz reports."""
        return self._dialect.name

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions -------------------------------------------------------------

    def _tx(self, fence: Fence | None = None) -> "_Tx":
        return _Tx(self, fence)

    def transaction(self) -> "_Tx":
        """`with store.transaction() as db:` one write transaction for a module that keeps
        its own tables here (eas/control/queues.py); `db.execute` takes qmark SQL."""
        return _Tx(self)

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one read-only statement, under the store lock."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- services -----------------------------------------------------------------

    def create_service(self, name: str, spec: dict[str, Any], token: str) -> ServiceRecord:
        now = time.time()
        rec = ServiceRecord(
            name=name,
            service_id=f"eas-m-{uuid.uuid4().hex[:12]}",
            spec=spec,
            token=token,
            desired=RUNNING,
            status=Status.CREATING,
            created_at=now,
            updated_at=now,
        )
        with self._tx() as db:
            if db.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(name)
            # Two servers on one database may both pass the check: the key decides.
            inserted = db.execute(
                "INSERT INTO services (name, service_id, spec, token, desired, status, message,"
                " version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, rec.service_id, json.dumps(spec), token, rec.desired, rec.status, "", 1, now, now),
            ).rowcount
            if inserted != 1:
                raise AlreadyExists(name)
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
            row = db.execute("SELECT version FROM services WHERE name = ?" + db.for_update, (name,)).fetchone()
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

    def set_status(self, name: str, status: str, message: str = "", fence: Fence | None = None) -> bool:
        """Record what the controller observed; returns True when it changed."""
        message = redact_text(message)
        with self._tx(fence) as db:
            row = db.execute("SELECT status, message FROM services WHERE name = ?" + db.for_update,
                             (name,)).fetchone()
            if row is None or (row["status"] == status and row["message"] == message):
                return False
            db.execute(
                "UPDATE services SET status = ?, message = ? WHERE name = ?", (status, message, name)
            )
            if row["status"] != status:
                text = f"{row['status']} -> {status}" + (f": {message}" if message else "")
                self._event(db, name, "Status", text)
            return True

    def remove(self, name: str, fence: Fence | None = None) -> None:
        """Forget a deleted service: its row, versions, events and pending demand.

        A shared endpoint named after it that still sends traffic to partners keeps
        answering: the token moves into that traffic row (the one place it lives now).
        """
        with self._tx(fence) as db:
            row = db.execute("SELECT token FROM services WHERE name = ?", (name,)).fetchone()
            if row is not None:
                db.execute("UPDATE traffic SET token = ? WHERE name = ? AND kind = 'service'", (row["token"], name))
            db.execute("DELETE FROM services WHERE name = ?", (name,))
            db.execute("DELETE FROM versions WHERE service = ?", (name,))
            db.execute("DELETE FROM demand WHERE service = ?", (name,))
            db.execute("DELETE FROM backflow WHERE service = ?", (name,))
            for queue in (name, name + "/sink"):  # an Async service's queues go with it
                db.execute("DELETE FROM queue_entries WHERE queue = ?", (queue,))
                db.execute("DELETE FROM queue_heads WHERE queue = ?", (queue,))
            if db.execute("SELECT 1 FROM traffic WHERE name = ?", (name,)).fetchone() is None:
                db.execute("DELETE FROM events WHERE service = ?", (name,))
            else:  # the endpoint lives on: its history stays with it
                self._event(db, name, "Deleted", "service deleted; its endpoint stays for its partners")

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
            owned = rec.kind != "group" and db.execute(
                "SELECT 1 FROM services WHERE name = ?", (rec.name,)).fetchone() is not None
            token = "" if owned else rec.token  # a service's endpoint: its token is the service's
            db.execute(
                "INSERT INTO traffic (name, kind, token, backends, mirror, created_at, mode)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, token = excluded.token, "
                "backends = excluded.backends, mirror = excluded.mirror, mode = excluded.mode",
                (rec.name, rec.kind, token, json.dumps(rec.backends),
                 json.dumps(rec.mirror) if rec.mirror else "", rec.created_at, rec.mode),
            )
            self._event(db, event_service, "Traffic", event)

    def traffic(self) -> dict[str, TrafficRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM traffic").fetchall()
        return {r["name"]: TrafficRecord(
            name=r["name"], kind=r["kind"], token=r["token"],
            backends=[(b[0], int(b[1])) for b in json.loads(r["backends"])],
            mirror=tuple(json.loads(r["mirror"])) if r["mirror"] else None,  # type: ignore[arg-type]
            created_at=r["created_at"], mode=r["mode"],
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

    def delete_traffic(self, name: str, event_service: str, event: str, fence: Fence | None = None) -> None:
        with self._tx(fence) as db:
            db.execute("DELETE FROM traffic WHERE name = ?", (name,))
            if db.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone() is None:
                db.execute("DELETE FROM events WHERE service = ?", (name,))  # a group or orphan: gone for good
            self._event(db, event_service, "Traffic", event)

    def latest_version(self, name: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(version) AS v FROM versions WHERE service = ?", (name,)
            ).fetchone()
        return int(row["v"] or 0)

    # -- events -------------------------------------------------------------------

    def add_event(self, service: str, type_: str, message: str, fence: Fence | None = None) -> None:
        with self._tx(fence) as db:
            self._event(db, service, type_, message)

    def events(self, service: str, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, type, message FROM events WHERE service = ? ORDER BY id DESC LIMIT ?",
                (service, limit),
            ).fetchall()
        return [dict(r) for r in reversed(rows)]

    def _event(self, db: "_Conn", service: str, type_: str, message: str) -> None:
        """Record an event of a service or endpoint that exists (none outlive what they are
        about), with credentials in URLs redacted; keep the last `max_events` of it."""
        inserted = db.execute(
            "INSERT INTO events (service, at, type, message) SELECT ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM services WHERE name = ?) OR EXISTS (SELECT 1 FROM traffic WHERE name = ?)",
            (service, time.time(), type_, redact_text(message), service, service),
        ).rowcount
        if inserted:
            db.execute(
                "DELETE FROM events WHERE service = ? AND id <= (SELECT id FROM events WHERE service = ?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (service, service, self.max_events),
            )

    # -- demand: a request found a sleeping service (any server's gateway) -------------

    def record_demand(self, names: list[str]) -> None:
        """Note that requests wait for these services; the leader wakes them (consume_demand)."""
        if not names:
            return
        with self._tx() as db:
            for name in names:
                db.execute(f"INSERT INTO demand (service, at) VALUES (?, {self._dialect.now_sql}) "
                           "ON CONFLICT (service) DO UPDATE SET at = excluded.at", (name,))

    def consume_demand(self, fence: Fence | None = None) -> list[str]:
        """The services with recorded demand, removed as they are read (the leader's pass)."""
        with self._tx(fence) as db:
            rows = db.execute("DELETE FROM demand RETURNING service").fetchall()
        return sorted(r["service"] for r in rows)

    # -- backflow: captured requests and answers (eas/control/backflow.py) ---------

    def add_backflow(self, records: list[tuple[str, float, str]], keep: dict[str, int]) -> None:
        """Write captured (service, at, record JSON) rows; keep the newest `keep[service]`."""
        if not records:
            return
        with self._tx() as db:
            for service, at, record in records:
                db.execute("INSERT INTO backflow (service, at, record) SELECT ?, ?, ?"
                           " WHERE EXISTS (SELECT 1 FROM services WHERE name = ?)", (service, at, record, service))
            for service in {r[0] for r in records}:
                db.execute("DELETE FROM backflow WHERE service = ? AND id <= (SELECT id FROM backflow"
                           " WHERE service = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (service, service, keep.get(service, 100_000)))

    def backflow(self, service: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Captured records of a service with id > `after`, oldest first: (id, at, record)."""
        with self._lock:
            rows = self._db.execute("SELECT id, at, record FROM backflow WHERE service = ? AND id > ?"
                                    " ORDER BY id LIMIT ?", (service, after, limit)).fetchall()
        return [dict(r) for r in rows]

    def backflow_count(self, service: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) AS n FROM backflow WHERE service = ?", (service,)).fetchone()
        return int(row["n"])

    def clear_backflow(self, service: str) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM backflow WHERE service = ?", (service,)).rowcount

    # -- batch prediction jobs (eas/control/jobs.py) -------------------------------

    def create_job(self, name: str, spec: dict[str, Any], state: str, next_run: float | None) -> None:
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"job '{name}' already exists")
            db.execute("INSERT INTO jobs (name, spec, state, message, run, next_run, created_at, updated_at)"
                       " VALUES (?, ?, ?, '', 0, ?, ?, ?)", (name, json.dumps(spec), state, next_run, now, now))

    def job(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"job '{name}' does not exist")
        return {**dict(row), "spec": json.loads(row["spec"])}

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
        return [{**dict(r), "spec": json.loads(r["spec"])} for r in rows]

    def update_job(self, name: str, **fields: Any) -> None:
        allowed = {"state", "message", "run", "next_run", "total"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"update_job takes {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets}, updated_at = ? WHERE name = ?",
                       (*fields.values(), time.time(), name))

    def delete_job(self, name: str) -> None:
        with self._tx() as db:
            if not db.execute("DELETE FROM jobs WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"job '{name}' does not exist")
            db.execute("DELETE FROM job_items WHERE job = ?", (name,))

    def finish_items(self, job: str, run: int, items: list[tuple[str, bool, str]]) -> None:
        """Record items of a run as done: (item, ok, error)."""
        with self._tx() as db:
            for item, ok, error in items:
                db.execute("INSERT INTO job_items (job, run, item, ok, error) VALUES (?, ?, ?, ?, ?)"
                           " ON CONFLICT (job, run, item) DO UPDATE SET ok = excluded.ok, error = excluded.error",
                           (job, run, item, int(ok), error[:1000]))

    def job_items(self, job: str, run: int) -> dict[str, tuple[bool, str]]:
        with self._lock:
            rows = self._db.execute("SELECT item, ok, error FROM job_items WHERE job = ? AND run = ?",
                                    (job, run)).fetchall()
        return {r["item"]: (bool(r["ok"]), r["error"]) for r in rows}

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

    def init_setting(self, key: str, value: str) -> str:
        """Store `value` unless the key is set; return what is stored.

        Two servers starting at once on one database agree on generated secrets
        (admin key, internal key): the first write wins and both read it back.
        """
        with self._tx() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                       (key, value))
            return str(db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()["value"])

    # -- access keys (management API credentials besides the admin pair, eas/api/signature.py) --

    def create_access_key(self, key: AccessKeyRecord) -> None:
        """Record a new AccessKey pair; AlreadyExists if its id is taken."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM access_keys WHERE id = ?", (key.id,)).fetchone() is not None:
                raise AlreadyExists(key.id)
            db.execute("INSERT INTO access_keys (id, secret, role, description, created_at) VALUES (?, ?, ?, ?, ?)",
                       (key.id, key.secret, key.role, key.description, key.created_at))

    def access_key(self, key_id: str) -> AccessKeyRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM access_keys WHERE id = ?", (key_id,)).fetchone()
        return _access_key(row) if row else None

    def access_keys(self) -> list[AccessKeyRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM access_keys ORDER BY created_at, id").fetchall()
        return [_access_key(r) for r in rows]

    def delete_access_key(self, key_id: str) -> bool:
        """Revoke a pair; False when there was none of that id."""
        with self._tx() as db:
            return bool(db.execute("DELETE FROM access_keys WHERE id = ?", (key_id,)).rowcount)

    # -- leases (leader election, eas/control/leader.py) -----------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> tuple[bool, int]:
        """Take or renew lease `name` for `holder` until database-now + ttl_s.

        It is granted when free, expired, or already `holder`'s; returns (granted, term).
        The term grows by one at every change of holder (a fencing number). Expiry is
        judged on the database's clock, so servers with skewed clocks still agree.
        """
        now = self._dialect.now_sql
        with self._tx() as db:
            db.execute(
                f"INSERT INTO leases (name, holder, term, expires_at) VALUES (?, ?, 1, {now} + ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, "
                "term = CASE WHEN leases.holder = excluded.holder THEN leases.term ELSE leases.term + 1 END "
                f"WHERE leases.holder = excluded.holder OR leases.expires_at < {now}",
                (name, holder, float(ttl_s)),
            )
            row = db.execute("SELECT holder, term FROM leases WHERE name = ?", (name,)).fetchone()
        return row["holder"] == holder, int(row["term"])

    def release_lease(self, name: str, holder: str) -> None:
        """Give a lease up at once (a clean shutdown), so another server need not wait it out."""
        with self._tx() as db:
            db.execute(f"UPDATE leases SET expires_at = {self._dialect.now_sql} - 1 WHERE name = ? AND holder = ?",
                       (name, holder))

    def check_fence(self, fence: Fence) -> None:
        """Raise Fenced unless `fence` is still the current term of its lease (what a
        controller asks before it acts on the backend)."""
        with self._tx(fence):
            pass

    def lease(self, name: str) -> dict[str, Any] | None:
        """The lease row with `remaining_s` (negative once expired), for status and tests."""
        with self._lock:
            row = self._db.execute(
                f"SELECT holder, term, expires_at - {self._dialect.now_sql} AS remaining_s FROM leases WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else {"holder": row["holder"], "term": int(row["term"]),
                                         "remaining_s": float(row["remaining_s"])}


class _Tx:
    """`with store._tx() as db:` runs the block as one transaction under the store lock."""

    def __init__(self, store: Store, fence: Fence | None = None) -> None:
        self.store = store
        self.fence = fence

    def __enter__(self) -> "_Conn":
        self.store._lock.acquire()
        try:
            self.store._db.begin()
        except BaseException:
            self.store._lock.release()
            raise
        if self.fence is not None:
            try:
                self._check_fence(self.fence)
            except BaseException:
                self.__exit__(Fenced, None, None)
                raise
        return self.store._db

    def _check_fence(self, fence: Fence) -> None:
        """Inside the write transaction: the lease row must still name this holder and term
        and be unexpired on the database's clock (the row is locked on PostgreSQL; SQLite's
        write lock is already held), so no takeover can commit between check and write."""
        db = self.store._db
        row = db.execute(
            f"SELECT holder, term, expires_at - {self.store._dialect.now_sql} AS remaining_s FROM leases"
            " WHERE name = ?" + db.for_update, (fence.lease,)).fetchone()
        if row is None or row["holder"] != fence.holder or int(row["term"]) != fence.term \
                or float(row["remaining_s"]) <= 0:
            now = "none" if row is None else f"{row['holder']} term {row['term']}"
            raise Fenced(f"write refused: {fence.holder} acts under term {fence.term} of lease "
                         f"'{fence.lease}', which is no longer current (now: {now})")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.store._db.end(commit=exc_type is None)
        finally:
            self.store._lock.release()


# -- dialects: everything that differs between SQLite and PostgreSQL ------------------


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def redact(target: str) -> str:
    """A store target fit for logs: the password of a URL replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", target)


class _Dialect:
    name = ""
    #: Appended to a SELECT that a transaction then updates (a row lock where needed).
    for_update = ""
    #: SQL for "now" in Unix seconds, on the database's clock.
    now_sql = ""
    autoid = ""
    blob = ""

    def connect(self) -> Any: ...
    def sql(self, text: str) -> str:
        return text
    def begin(self, raw: Any) -> None: ...
    def end(self, raw: Any, commit: bool) -> None:
        raw.execute("COMMIT" if commit else "ROLLBACK")
    def create_schema(self, raw: Any) -> None: ...
    def is_disconnect(self, exc: BaseException) -> bool:
        return False


def private_files(path: str) -> None:
    """The SQLite file and its -wal/-shm readable by the server's user only (0600).

    The database holds every token and the master key. SQLite creates its -wal and -shm
    files with the database file's mode, so creating that one 0600 covers all three;
    files left 0644 by an older server are narrowed too.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass


class _Sqlite(_Dialect):
    name = "sqlite"
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    blob = "BLOB"

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        private_files(self.path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    def begin(self, raw: sqlite3.Connection) -> None:
        # Take the write lock up front: a read-then-write never meets a busy upgrade.
        raw.execute("BEGIN IMMEDIATE")

    def create_schema(self, raw: sqlite3.Connection) -> None:
        raw.executescript(SCHEMA.format(autoid=self.autoid, blob=self.blob))
        for table, column, declaration in ADDED_COLUMNS:
            if column not in {r["name"] for r in raw.execute(f"PRAGMA table_info({table})")}:
                raw.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class _Postgres(_Dialect):
    name = "postgresql"
    for_update = " FOR UPDATE"
    now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    autoid = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    blob = "BYTEA"
    #: Serialises schema creation when several servers start on an empty database.
    SCHEMA_LOCK = 0x6561735F  # "eas_"

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SystemExit("a postgresql:// store needs psycopg: pip install 'eas-serving[postgres]'") from None
        self.url = url

    def connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)

    def sql(self, text: str) -> str:
        # One SQL text for both: qmark placeholders become psycopg's (no literal ? or % in ours).
        return text.replace("?", "%s")

    def begin(self, raw: Any) -> None:
        raw.execute("BEGIN")

    def create_schema(self, raw: Any) -> None:
        with raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (self.SCHEMA_LOCK,))
            for statement in SCHEMA.format(autoid=self.autoid, blob=self.blob).split(";"):
                if statement.strip():
                    raw.execute(statement)
            for table, column, declaration in ADDED_COLUMNS:
                raw.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {declaration}")

    def is_disconnect(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError)


class _Conn:
    """The connection the Store methods use: `execute` with qmark SQL on either dialect.

    Outside a transaction a dropped PostgreSQL connection is reopened once and the
    statement retried (reads and single upserts are safe to repeat).
    """

    def __init__(self, dialect: _Dialect) -> None:
        self.dialect = dialect
        self.for_update = dialect.for_update
        self._raw = dialect.connect()
        self._in_tx = False
        dialect.create_schema(self._raw)

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        text = self.dialect.sql(sql)
        try:
            return self._raw.execute(text, params)
        except Exception as exc:
            if self._in_tx or not self.dialect.is_disconnect(exc):
                raise
            self._reconnect()
            return self._raw.execute(text, params)

    def begin(self) -> None:
        try:
            self.dialect.begin(self._raw)
        except Exception as exc:
            if not self.dialect.is_disconnect(exc):
                raise
            self._reconnect()
            self.dialect.begin(self._raw)
        self._in_tx = True

    def end(self, commit: bool) -> None:
        self._in_tx = False
        self.dialect.end(self._raw, commit)

    def _reconnect(self) -> None:
        try:
            self._raw.close()
        except Exception:
            pass
        self._raw = self.dialect.connect()

    def close(self) -> None:
        self._raw.close()


def _access_key(row: Any) -> AccessKeyRecord:
    return AccessKeyRecord(row["id"], row["secret"], row["role"], row["description"], float(row["created_at"]))


def _record(row: Any) -> ServiceRecord:
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
