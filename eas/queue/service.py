"""What the queue front and the dispatcher share: which services are Async, the queue
operations off the event loop, and a wake-up per queue.

The queue operations are store transactions (eas/control/queues.py); they run on a
worker thread so the gateway's event loop never waits on the database. Changes made
through this server wake its waiters at once (a long-polling GET, a watcher, the
dispatcher); changes made by another server sharing a PostgreSQL store are seen by
the waiters' poll (`POLL_S`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from eas.control.queues import Queues
from eas.control.store import Store
from eas.spec import ServiceSpec, is_async

T = TypeVar("T")

#: How often a waiter looks at the store without being woken (other servers' changes).
POLL_S = 0.5
#: How often the list of Async services is read from the store.
REFRESH_S = 0.5


class QueueService:
    def __init__(self, store: Store, server_id: str) -> None:
        self.queues = Queues(store)
        self.store = store
        self.server_id = server_id
        """Takers from this server are named `{server_id}:...`: a restart hands back all of them."""
        self.specs: dict[str, ServiceSpec] = {}
        """The Async services the store holds (desired Running or not), by name."""
        self.on_put: Callable[[str], None] = lambda name: None
        """Called when a request is put on a service's input queue (wakes a service at zero)."""
        self._changed: dict[str, asyncio.Event] = {}

    def taker(self, kind: str) -> str:
        return f"{self.server_id}:{kind}"

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A queue operation on a worker thread (a store transaction)."""
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    def refresh(self) -> None:
        """Read which services are Async (blocking: call from a thread)."""
        specs: dict[str, ServiceSpec] = {}
        for rec in self.store.list():
            if not is_async(rec.spec):
                continue
            try:
                specs[rec.name] = ServiceSpec.model_validate(rec.spec)
            except ValueError:
                continue
        self.specs = specs

    def is_async(self, name: str) -> bool:
        return name in self.specs

    # -- wake-ups ------------------------------------------------------------------

    def changed(self, queue: str) -> None:
        """Something was put on (or handed back to) `queue`: wake whoever waits for it."""
        event = self._changed.pop(queue, None)
        if event is not None:
            event.set()

    async def wait_change(self, queue: str, timeout: float = POLL_S) -> None:
        """Until `queue` changes through this server, or `timeout` passes."""
        event = self._changed.setdefault(queue, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
