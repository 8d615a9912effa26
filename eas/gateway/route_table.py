"""The route table the gateway reads on every request, written by the controller.

Lookups are plain dict reads: the hot path never touches the store or Ray's control
plane. Entries are replaced whole, so a reader sees an old or a new route, never half.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class Endpoint:
    """One instance's own HTTP server."""

    instance: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    name: str
    token: str
    endpoints: tuple[Endpoint, ...]
    """Instances ready to answer; empty while none can (then `unavailable` says why)."""
    unavailable: str
    keepalive_s: float
    rate_limit: int | None = None
    """Requests per second the gateway admits for this service (429 beyond)."""
    hold_s: float = 0.0
    """How long a request may wait for an instance while none is ready but one is
    coming (deploying, restarting, waking); 0 answers 503 at once."""
    wake_on_demand: bool = False
    """The service sleeps: a request must tell the controller to wake it."""
    max_held: int = 1000
    """At most this many requests wait at once; more get 503 at once (bounded memory)."""
    internal_key: str = ""
    """The key this service's instances accept from the gateway (its own, derived per
    service); empty: the gateway's own key."""


@dataclass(frozen=True)
class Entry:
    """An endpoint name clients call: its token and the services behind it, by weight."""

    name: str
    token: str
    backends: tuple[tuple[str, int], ...]
    mirror: tuple[str, int] | None = None
    closed: str = ""
    """Non-empty for a released partner's own endpoint: why it no longer answers."""

    def pick(self, draw: float, pin: str | None = None) -> str | None:
        """The backend for one request: the pinned one if it is a backend, else by weight.

        `draw` is uniform in [0, 1): random per request, as EAS splits traffic.
        """
        if pin and any(name == pin for name, _ in self.backends):
            return pin
        total = sum(w for _, w in self.backends)
        if total <= 0:
            return self.backends[0][0] if self.backends else None
        point = draw * total
        for name, weight in self.backends:
            if point < weight:
                return name
            point -= weight
        return self.backends[-1][0]


class RouteTable:
    """Service routes and endpoint entries, written by the controller's thread and read
    by the gateway's event loop; waiters are woken across threads."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._entries: dict[str, Entry] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._waker: Callable[[str], None] = lambda name: None

    # -- activity: the gateway tells, the controller reads (sleep, scale to zero) -----

    def touch(self, name: str) -> None:
        """A request for the service passed the gateway now."""
        self._last_seen[name] = time.monotonic()

    def last_seen(self, name: str) -> float:
        """Monotonic time of the service's last request through this gateway (0: none)."""
        return self._last_seen.get(name, 0.0)

    def set_waker(self, waker: Callable[[str], None]) -> None:
        """Who wakes a sleeping service when a request finds it (the controller)."""
        self._waker = waker

    def request_wake(self, name: str) -> None:
        self._waker(name)

    # -- routes and entries -------------------------------------------------------------

    def entry(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def set_entries(self, entries: dict[str, Entry]) -> None:
        self._entries = entries

    async def wait_ready(self, name: str, timeout: float) -> Route | None:
        """Wait until the service has an instance to call, at most `timeout` seconds."""
        route = self._routes.get(name)
        if route is not None and route.endpoints:
            return route
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.setdefault(name, []).append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(name, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))
        return self._routes.get(name)

    def waiting(self, name: str) -> int:
        """Requests held for the service right now (a service with callers is not idle)."""
        return len(self._waiters.get(name, ()))

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def set(self, route: Route) -> None:
        self._routes[route.name] = route
        if route.endpoints and route.name in self._waiters:
            with self._lock:
                waiting = self._waiters.pop(route.name, [])
            for loop, future in waiting:
                loop.call_soon_threadsafe(_release, future)

    def drop(self, name: str) -> None:
        self._routes.pop(name, None)

    def names(self) -> Iterable[str]:
        return list(self._routes)

    def items(self) -> list[tuple[str, Route]]:
        return list(self._routes.items())


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
