"""Data backflow at the gateway: a share of requests and their answers, copied aside.

The copy costs the request a random draw and, when drawn, two bounded slices and an
append to a bounded queue: nothing blocks, nothing can fail the request, and when the
queue is full (the writer lags) the oldest waiting copy is dropped and counted. No
header is copied, so a token or signature is never kept. The control plane drains the
queue into the store (eas/control/backflow.py).
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

MAX_PENDING = 20_000
"""Copies waiting for the writer; past it the oldest are dropped (bounded memory)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One captured request and its answer, bodies cut at the service's limit."""

    service: str
    at: float
    request_id: str
    status: int
    request: bytes
    request_bytes: int
    request_type: str
    answer: bytes
    answer_bytes: int
    answer_type: str
    max_body_bytes: int


class Capture:
    def __init__(self, max_pending: int = MAX_PENDING, draw: Callable[[], float] = random.random) -> None:
        self._pending: deque[Sample] = deque(maxlen=max_pending)
        self._draw = draw
        self.dropped = 0
        """Copies dropped because the writer lagged."""

    def offer(self, service: str, request_id: str, ratio: float, max_bytes: int, request: bytes,
              request_type: str | None, status: int, answer: bytes, answer_type: str | None) -> bool:
        """Keep a copy with probability `ratio`; True when kept."""
        if ratio <= 0 or self._draw() >= ratio:
            return False
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(Sample(service, time.time(), request_id, status, request[:max_bytes], len(request),
                                    request_type or "", answer[:max_bytes], len(answer), answer_type or "",
                                    max_bytes))
        return True

    def drain(self, limit: int = 5000) -> list[Sample]:
        """Take up to `limit` waiting copies, oldest first (any thread)."""
        out = []
        while len(out) < limit:
            try:
                out.append(self._pending.popleft())
            except IndexError:
                break
        return out

    def __len__(self) -> int:
        return len(self._pending)
