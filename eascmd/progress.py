"""Progress lines while eascmd waits on a service (create, modify, start, stop, delete).

A line is printed whenever the instance counts or the server's message change, and the
same line is repeated every HEARTBEAT_S seconds while nothing changes, so the operator
sees the command is alive without a flood of identical lines every poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Seconds between repeats of an unchanged progress line.
HEARTBEAT_S = 5.0


def counts_line(service: dict[str, Any]) -> str:
    """`[OK] Waiting [Total: 1, Pending: 1, Running: 0]`, as EAS's eascmd prints it."""
    label = "Running" if service.get("Status") == "Running" else "Waiting"
    return (
        f"[OK] {label} [Total: {service.get('TotalInstance', 0)}, "
        f"Pending: {service.get('PendingInstance', 0)}, Running: {service.get('RunningInstance', 0)}]"
    )


class ProgressPrinter:
    """The `on_progress` callback given to ManagementClient's wait helpers."""

    def __init__(
        self,
        echo: Callable[[str], None],
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
        line: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self._echo = echo
        self._line = line or counts_line
        """The progress line of a service: counts (create, modify, start) or a fixed text (delete)."""
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._last_line: str | None = None
        self._last_message = ""
        self._printed_at = 0.0

    def __call__(self, service: dict[str, Any]) -> None:
        message = str(service.get("Message") or "")
        if message and message != self._last_message and service.get("Status") != "Failed":
            self._echo(f"[OK] {message}")
        self._last_message = message
        line = self._line(service)
        now = self._clock()
        if line != self._last_line or now - self._printed_at >= self._heartbeat_s:
            self._echo(line)
            self._last_line, self._printed_at = line, now
