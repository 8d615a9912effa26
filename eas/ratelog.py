"""Rate-limited traceback logging: the first failure of a burst in full, the rest counted.

A failure that repeats (a reconcile pass failing every second, a processor raising on
every request an outsider sends) must not fill the disk with identical tracebacks. A
`BurstLog` logs the first failure per key in full, then only counts failures of that key
for `window_s` seconds; the next one after the window is logged in full again, with how
many were left out. Plain standard-library code, so every layer may use it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

#: Keys remembered at once (oldest dropped first), so the table itself stays bounded.
MAX_KEYS = 1000


class BurstLog:
    def __init__(self, logger: logging.Logger, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.window_s = window_s
        self._clock = clock
        self._bursts: dict[str, list[float]] = {}
        """key -> [window start, failures left out since]."""
        self._lock = threading.Lock()

    def exception(self, key: str, msg: str, *args: Any) -> bool:
        """Call inside `except`: log the current exception under `key`; True if logged in full."""
        now = self._clock()
        with self._lock:
            burst = self._bursts.get(key)
            if burst is not None and now - burst[0] < self.window_s:
                burst[1] += 1
                return False
            left_out = int(burst[1]) if burst is not None else 0
            self._bursts.pop(key, None)
            self._bursts[key] = [now, 0]
            while len(self._bursts) > MAX_KEYS:
                self._bursts.pop(next(iter(self._bursts)))
        if left_out:
            msg += " (%d more like it in the last %.0f s were not logged)"
            args = (*args, left_out, self.window_s)
        self.logger.error(msg, *args, exc_info=True)
        return True

    def left_out(self, key: str) -> int:
        """Failures counted but not logged in the current window of `key`."""
        with self._lock:
            burst = self._bursts.get(key)
            return int(burst[1]) if burst is not None else 0
