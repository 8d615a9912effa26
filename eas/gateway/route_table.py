"""The route table the gateway reads on every request, written by the controller.

Lookups are plain dict reads: the hot path never touches the store or Ray's control
plane. Entries are replaced whole, so a reader sees an old or a new route, never half.

An instance the gateway finds dead (a connection refused or broken by it) is taken out
of its service's route at once (`mark_down`), instead of waiting for the controller's
next pass to notice: what the gateway routes to and what DIRECT discovery lists are the
controller's instances minus those. It comes back when the controller sees it healthy
again (`restore`, after a health check of its own) and is forgotten when the controller
no longer lists it (a dead replica is replaced by a new one, at a new address).
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    grpc: tuple[str, int] | None = None
    """A container service with `metadata.enable_grpc`: (host, port) of its serving
    container's gRPC server, where the gateway relays gRPC calls (grpc_relay.py)."""

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
    retry_in_flight: bool = False
    """A request whose instance died while running it may be sent once more to another
    instance (`rpc.retry_in_flight`: the service's predictions are pure)."""
    backflow: tuple[float, int] | None = None
    """Data backflow: (share of requests captured, bytes kept of each body); None: off."""
    pass_headers: bool = False
    """A container serves: the client's headers (cookies, Accept, its own) go on to it,
    all but its credentials and the hop-by-hop ones."""
    enable_grpc: bool = False
    """A container service with `metadata.enable_grpc`: any gRPC method reaches its
    container (eas/gateway/grpc_relay.py), at its endpoints' `grpc` addresses."""


@dataclass(frozen=True)
class Entry:
    """An endpoint name clients call: its token and the services behind it, by weight."""

    name: str
    token: str
    backends: tuple[tuple[str, int], ...]
    mirror: tuple[str, int] | None = None
    closed: str = ""
    """Non-empty for a released partner's own endpoint: why it no longer answers."""
    bml: str = ""
    """The endpoint answers Baidu BML's API (eas/protocols/bml.py): "code" for user code
    (its answers are already BML-shaped), "framework" for a built-in processor (its answer
    goes under "result"); "" for EAS's API."""

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


@dataclass(frozen=True)
class Down:
    """An instance this gateway took out of rotation, and why."""

    service: str
    endpoint: Endpoint
    why: str
    since: float
    """Monotonic time it was taken out."""


class RouteTable:
    """Service routes and endpoint entries, written by the controller's thread and read
    by the gateway's event loop; waiters are woken across threads."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        """What the gateway reads: the controller's routes without the instances marked down."""
        self._given: dict[str, Route] = {}
        """The routes as the controller set them."""
        self._down: dict[tuple[str, int], Down] = {}
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
        """The controller's route for a service (its thread). Instances marked down stay
        out of it; marks of instances it no longer lists are forgotten."""
        with self._lock:
            self._given[route.name] = route
            if self._down:
                listed = {(e.host, e.port) for e in route.endpoints}
                for key, down in list(self._down.items()):
                    if down.service == route.name and key not in listed:
                        del self._down[key]
            route = self._visible(route)
            self._routes[route.name] = route
        self._wake_waiters(route)

    def _wake_waiters(self, route: Route) -> None:
        if route.endpoints and route.name in self._waiters:
            with self._lock:
                waiting = self._waiters.pop(route.name, [])
            for loop, future in waiting:
                loop.call_soon_threadsafe(_release, future)

    def drop(self, name: str) -> None:
        with self._lock:
            self._routes.pop(name, None)
            self._given.pop(name, None)
            for key, down in list(self._down.items()):
                if down.service == name:
                    del self._down[key]

    # -- instances the gateway found dead -------------------------------------------------

    def mark_down(self, name: str, endpoint: Endpoint, why: str) -> bool:
        """Take an instance out of the service's route now (the gateway's loop, at the
        first connection failure). True when it was still in rotation."""
        key = (endpoint.host, endpoint.port)
        with self._lock:
            if key in self._down:
                return False
            self._down[key] = Down(name, endpoint, why, time.monotonic())
            given = self._given.get(name)
            if given is not None:
                self._routes[name] = self._visible(given)
        return True

    def down(self) -> list[Down]:
        """The instances out of rotation (the controller checks their health)."""
        return list(self._down.values())

    def restore(self, endpoint: Endpoint) -> None:
        """The controller saw the instance healthy: back into its service's route."""
        with self._lock:
            down = self._down.pop((endpoint.host, endpoint.port), None)
            given = self._given.get(down.service) if down is not None else None
            route = self._visible(given) if given is not None else None
            if route is not None:
                self._routes[route.name] = route
        if route is not None:
            self._wake_waiters(route)

    def _visible(self, route: Route) -> Route:
        """`route` without the instances marked down (under the lock)."""
        if not self._down:
            return route
        kept = tuple(e for e in route.endpoints if (e.host, e.port) not in self._down)
        if len(kept) == len(route.endpoints):
            return route
        why = route.unavailable
        if not kept:
            failed = [d for d in self._down.values() if d.service == route.name]
            why = f"instance {failed[-1].endpoint.instance} failed ({failed[-1].why})" if failed else why
        return dataclasses.replace(route, endpoints=kept, unavailable=why)

    def names(self) -> Iterable[str]:
        return list(self._routes)

    def items(self) -> list[tuple[str, Route]]:
        return list(self._routes.items())


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
