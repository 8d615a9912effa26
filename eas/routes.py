"""The routing table the gateway reads on every request, written by the controller.

Lookups are plain dict reads: the hot path never touches the store or Ray's control
plane. Entries are replaced whole, so a reader sees an old or a new route, never half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


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


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._routes

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def set(self, route: Route) -> None:
        self._routes[route.name] = route

    def drop(self, name: str) -> None:
        self._routes.pop(name, None)

    def names(self) -> Iterable[str]:
        return list(self._routes)
