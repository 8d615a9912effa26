"""The queues of asynchronous services, kept in the store (SQLite or PostgreSQL).

An Async service has an input queue named after it and a sink queue `{svc}/sink`
(docs/async.md). Each entry has an index (1, 2, ... per queue, never reused: the
queue's head row counts them), the request id the put answered, tags, the bytes and,
on the sink, a message (why a request failed). Every operation is one transaction of
the store, so a `kill -9` at any moment leaves each request either waiting, taken or
answered, never lost and never answered twice:

- `take` marks entries as taken by one consumer (the dispatcher feeding instances, or
  a watcher without auto-commit) and counts a delivery;
- `complete` puts an answer on the sink and removes its request in one transaction,
  only while that consumer still holds the request;
- `release` hands taken entries back (a watcher left, the server restarted), so they
  are delivered again: at least once.

This is the place a Redis Streams backend would replace if the store became the
limit (docs/async.md, "Throughput").
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from eas.control.store import Store

SINK = "/sink"
#: Bytes of entry data one get or take loads at most (at least one entry, whatever its size).
MAX_READ_BYTES = 64 * 1024 * 1024


class QueueFull(Exception):
    """A put on a queue at its `max_length` (without `auto_evict`)."""


@dataclass
class QueueEntry:
    queue: str
    index: int
    request_id: str
    tags: dict[str, str]
    data: bytes
    message: str = ""
    priority: int = 0
    attempts: int = 0
    taken_by: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class QueueStats:
    length: int
    first: int
    """Index of the oldest entry (0: empty)."""
    last: int
    """The last index given out (0: none yet): what `stream.lastEntry` shows."""
    taken: int


def sink_of(service: str) -> str:
    return service + SINK


def service_of(queue: str) -> str:
    return queue.removesuffix(SINK)


def new_request_id() -> str:
    return uuid.uuid4().hex


class Queues:
    """Queue operations over the store; thread-safe (the store serialises them)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- writing -----------------------------------------------------------------

    def put(self, queue: str, data: bytes, tags: dict[str, str], *, priority: int = 0,
            request_id: str | None = None, max_length: int | None = None, evict: bool = False,
            message: str = "") -> QueueEntry:
        """Append one entry; its index and request id are the put's answer."""
        with self.store.transaction() as db:
            entry = self._append(db, queue, data, tags, priority, request_id or new_request_id(), message,
                                 max_length, evict)
        return entry

    def _append(self, db: Any, queue: str, data: bytes, tags: dict[str, str], priority: int, request_id: str,
                message: str, max_length: int | None, evict: bool) -> QueueEntry:
        if max_length is not None:
            length = db.execute("SELECT COUNT(*) AS n FROM queue_entries WHERE queue = ?", (queue,)).fetchone()["n"]
            if length >= max_length:
                if not evict:
                    raise QueueFull(f"queue '{queue}' is full ({length} entries, max_length {max_length})")
                db.execute("DELETE FROM queue_entries WHERE queue = ? AND idx IN (SELECT idx FROM queue_entries"
                           " WHERE queue = ? ORDER BY idx LIMIT ?)", (queue, queue, length - max_length + 1))
        index = db.execute(
            "INSERT INTO queue_heads (queue, last_index) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE"
            " SET last_index = queue_heads.last_index + 1 RETURNING last_index", (queue,)).fetchone()["last_index"]
        tags = {**tags, "requestId": request_id}
        now = time.time()
        db.execute("INSERT INTO queue_entries (queue, idx, request_id, tags, data, message, priority, attempts,"
                   " taken_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, '', ?)",
                   (queue, int(index), request_id, json.dumps(tags), data, message, priority, now))
        return QueueEntry(queue, int(index), request_id, tags, data, message, priority, 0, "", now)

    def take(self, queue: str, taker: str, *, index: int = 0, limit: int = 1,
             tags: dict[str, str] | None = None, max_bytes: int = MAX_READ_BYTES) -> list[QueueEntry]:
        """Up to `limit` entries nobody holds, from `index` on (priority first, then
        oldest), now held by `taker`; each take counts a delivery (`attempts`)."""
        with self.store.transaction() as db:
            entries = self._pick(db, "queue = ? AND idx >= ? AND taken_by = ''", (queue, index),
                                 "priority DESC, idx", limit, tags, max_bytes)
            for e in entries:
                e.attempts += 1
                e.taken_by = taker
                db.execute("UPDATE queue_entries SET taken_by = ?, attempts = ? WHERE queue = ? AND idx = ?",
                           (taker, e.attempts, queue, e.index))
        return entries

    def _pick(self, db: Any, where: str, params: tuple[Any, ...], order: str, limit: int,
              tags: dict[str, str] | None, max_bytes: int) -> list[QueueEntry]:
        """The entries a read or a take gets: at most `limit`, matching `tags`, and at most
        `max_bytes` of data together (always one, whatever its size), so a long GET or a
        wide watch window of large entries never loads more than that into memory."""
        scan = limit if not tags else max(limit * 20, 200)
        rows = db.execute(f"SELECT {_HEAD} FROM queue_entries WHERE {where} ORDER BY {order} LIMIT ?"
                          + db.for_update, (*params, scan)).fetchall()
        chosen: list[QueueEntry] = []
        total = 0
        for row in rows:
            entry = _entry(row)
            if not _matches(entry, tags):
                continue
            if chosen and total + int(row["size"]) > max_bytes:
                break
            chosen.append(entry)
            total += int(row["size"])
            if len(chosen) == limit:
                break
        if chosen:
            marks = ",".join("?" * len(chosen))
            data = {int(r["idx"]): bytes(r["data"]) for r in db.execute(
                f"SELECT idx, data FROM queue_entries WHERE queue = ? AND idx IN ({marks})",
                (chosen[0].queue, *[e.index for e in chosen])).fetchall()}
            for e in chosen:
                e.data = data.get(e.index, b"")
        return chosen

    def complete(self, entry: QueueEntry, answer: bytes, message: str = "", extra_tags: dict[str, str] | None = None,
                 sink_max: int | None = None, evict: bool = False) -> bool:
        """The answer to a taken request goes on the sink and the request leaves its queue,
        in one transaction; False (nothing written) when the taker no longer holds it."""
        with self.store.transaction() as db:
            row = db.execute("SELECT taken_by FROM queue_entries WHERE queue = ? AND idx = ?" + db.for_update,
                             (entry.queue, entry.index)).fetchone()
            if row is None or row["taken_by"] != entry.taken_by:
                return False
            tags = {**entry.tags, **(extra_tags or {})}
            self._append(db, sink_of(entry.queue), answer, tags, entry.priority, entry.request_id, message,
                         sink_max, evict)
            db.execute("DELETE FROM queue_entries WHERE queue = ? AND idx = ?", (entry.queue, entry.index))
        return True

    def release(self, taker: str, queue: str | None = None, indexes: list[int] | None = None) -> int:
        """Hand back what `taker` (a prefix ending in ':' matches every session of a
        server) holds, so it is delivered again; returns how many entries."""
        clause, params = ("taken_by LIKE ?", [taker.replace("%", "") + "%"]) if taker.endswith(":") \
            else ("taken_by = ?", [taker])
        if queue is not None:
            clause += " AND queue = ?"
            params.append(queue)
        if indexes:
            clause += f" AND idx IN ({','.join('?' * len(indexes))})"
            params.extend(indexes)
        with self.store.transaction() as db:
            return db.execute(f"UPDATE queue_entries SET taken_by = '' WHERE {clause}", tuple(params)).rowcount

    def release_all(self) -> int:
        """Hand back every held entry of the input queues (a new dispatcher takes over)."""
        with self.store.transaction() as db:
            return db.execute("UPDATE queue_entries SET taken_by = '' WHERE taken_by <> ''"
                              " AND queue NOT LIKE ?", ("%" + SINK,)).rowcount

    def delete(self, queue: str, indexes: list[int]) -> int:
        """Remove these entries (delete, or commit: the consumer is done with them)."""
        if not indexes:
            return 0
        with self.store.transaction() as db:
            return db.execute(f"DELETE FROM queue_entries WHERE queue = ? AND idx IN ({','.join('?' * len(indexes))})",
                              (queue, *indexes)).rowcount

    def truncate(self, queue: str, below: int) -> int:
        """Remove every entry with an index under `below`."""
        with self.store.transaction() as db:
            return db.execute("DELETE FROM queue_entries WHERE queue = ? AND idx < ?", (queue, below)).rowcount

    # -- reading -----------------------------------------------------------------

    def get(self, queue: str, *, index: int = 0, length: int = 1, request_id: str | None = None,
            tags: dict[str, str] | None = None, delete: bool = False,
            max_bytes: int = MAX_READ_BYTES) -> list[QueueEntry]:
        """Up to `length` entries from `index` on (or the one with `request_id`), in index
        order; with `delete` they leave the queue in the same transaction."""
        where, params = "queue = ? AND idx >= ?", (queue, index)
        if request_id:
            where, params = where + " AND request_id = ?", (*params, request_id)
        with self.store.transaction() as db:
            entries = self._pick(db, where, params, "idx", length, tags, max_bytes)
            if delete and entries:
                db.execute(f"DELETE FROM queue_entries WHERE queue = ? AND idx IN ({','.join('?' * len(entries))})",
                           (queue, *[e.index for e in entries]))
        return entries

    def held(self, taker: str, queue: str) -> int:
        """Entries of `queue` that `taker` holds (a watcher's sent, uncommitted frames)."""
        return int(self.store.read("SELECT COUNT(*) AS n FROM queue_entries WHERE queue = ? AND taken_by = ?",
                                   (queue, taker))[0]["n"])

    def stats(self, queue: str) -> QueueStats:
        row = self.store.read(
            "SELECT COUNT(*) AS n, COALESCE(MIN(idx), 0) AS first, SUM(CASE WHEN taken_by <> '' THEN 1 ELSE 0 END)"
            " AS taken FROM queue_entries WHERE queue = ?", (queue,))[0]
        head = self.store.read("SELECT last_index FROM queue_heads WHERE queue = ?", (queue,))
        return QueueStats(int(row["n"]), int(row["first"]), int(head[0]["last_index"]) if head else 0,
                          int(row["taken"] or 0))

    def position(self, queue: str, index: int) -> dict[str, Any] | None:
        """Where one entry stands: held by a consumer, and how many wait before it."""
        rows = self.store.read("SELECT taken_by, priority FROM queue_entries WHERE queue = ? AND idx = ?",
                               (queue, index))
        if not rows:
            return None
        ahead = self.store.read(
            "SELECT COUNT(*) AS n FROM queue_entries WHERE queue = ? AND taken_by = '' AND"
            " (priority > ? OR (priority = ? AND idx < ?))", (queue, rows[0]["priority"], rows[0]["priority"], index))
        pending = bool(rows[0]["taken_by"])
        return {"IsPending": pending, "WaitCount": 0 if pending else int(ahead[0]["n"])}

    def backlogs(self) -> dict[str, int]:
        """Requests per input queue not answered yet (waiting or being run): what
        `queue[backlog]` scales on, so a service never scales away from work in flight."""
        rows = self.store.read("SELECT queue, COUNT(*) AS n FROM queue_entries WHERE queue NOT LIKE ?"
                               " GROUP BY queue", ("%" + SINK,))
        return {r["queue"]: int(r["n"]) for r in rows}


#: Columns of an entry but its data, and the data's size (read before the data is).
_HEAD = "queue, idx, request_id, tags, message, priority, attempts, taken_by, created_at, LENGTH(data) AS size"


def _entry(row: Any) -> QueueEntry:
    """An entry from a `_HEAD` row (its data read apart)."""
    return QueueEntry(row["queue"], int(row["idx"]), row["request_id"], json.loads(row["tags"]), b"",
                      row["message"], int(row["priority"]), int(row["attempts"]), row["taken_by"],
                      float(row["created_at"]))


def _matches(entry: QueueEntry, tags: dict[str, str] | None) -> bool:
    return not tags or all(entry.tags.get(k) == v for k, v in tags.items())
