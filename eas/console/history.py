"""A short, bounded, in-memory history of each service's metrics for the console's charts.

Every `INTERVAL_S` a sampler thread reads what eas-server already keeps in memory, with
no Prometheus needed:

- the gateway's own counters (eas/gateway/metrics.py `GatewayMetrics`): requests by
  status code and the latency histogram, per endpoint name; rates and p50/p99 are
  computed over the interval from the counters' deltas;
- the scraper's last `/stats` of every instance (the controller's `instance_stats`):
  answers by code given by the service's own instances (to the gateway, A/B and group
  traffic included, and to DIRECT callers), queue depth, in-flight, batch sizes;
- the controller's instance counts (desired, current, ready).

Each service keeps `WINDOW_S / INTERVAL_S` samples (a deque that drops the oldest);
a service leaves the history when it leaves the controller's counts (deleted), and
instance baselines unseen for a while are dropped, so memory is bounded by the
number of services.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eas.gateway.metrics import GatewayMetrics, InstanceStats, ServiceCounts

log = logging.getLogger("eas.console")

INTERVAL_S = 2.0
WINDOW_S = 15 * 60.0
#: An instance's last counters are kept this long after it stops reporting, so a missed
#: scrape does not read as a burst when it comes back.
INSTANCE_BASELINE_TTL_S = 120.0


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    """Wall-clock time of the sample (seconds since the epoch)."""
    requests: dict[str, float]
    """Requests/s the gateway answered for this endpoint name, by status code."""
    p50_ms: float | None
    p99_ms: float | None
    """Gateway latency over the interval (None: no request)."""
    served: dict[str, float]
    """Answers/s given by the service's own instances, by status code (all callers)."""
    queued: int
    in_flight: int
    desired: int
    current: int
    ready: int
    batches: dict[str, float]
    """Server-side batches/s run by the service's instances, by batch size."""

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "requests": self.requests, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "served": self.served, "queued": self.queued, "in_flight": self.in_flight,
                "desired": self.desired, "current": self.current, "ready": self.ready, "batches": self.batches}


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count)], as Prometheus'
    histogram_quantile estimates it (linear within a bucket); None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # past the largest finite bound: the bound is all we know
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = upper, count
    return lower


class MetricsHistory:
    def __init__(self, metrics: GatewayMetrics, instances: Callable[[], Iterable[InstanceStats]],
                 services: Callable[[], dict[str, ServiceCounts]], interval_s: float = INTERVAL_S,
                 window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.instances = instances
        self.services = services
        self.interval_s = interval_s
        self.size = max(1, int(window_s / interval_s))
        self.clock = clock
        self._series: dict[str, deque[Sample]] = {}
        self._last_t: float | None = None
        self._gateway: dict[str, tuple[dict[str, float], list[tuple[float, float]]]] = {}
        self._instances: dict[str, _InstanceRead] = {}
        self._lock = threading.Lock()
        self._sampling = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the sampler thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="eas-console-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("sampling metrics for the console failed; retrying")
            if self._stop.wait(self.interval_s):
                return

    # -- one sample ------------------------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Read every source once and append one sample per service."""
        with self._sampling:  # one sample at a time: the baselines are the previous sample's
            self._sample(self.clock() if now is None else now)

    def _sample(self, now: float) -> None:
        counts = dict(self.services())
        gateway = self._read_gateway()
        seconds = now - self._last_t if self._last_t is not None and now > self._last_t else None
        first = seconds is None
        per_service = self._read_instances(now, seconds)
        with self._lock:
            for name in [n for n in self._series if n not in counts]:
                del self._series[name]  # deleted: its history goes with it
            for name, c in counts.items():
                codes, buckets = gateway.get(name, ({}, []))
                before = self._gateway.get(name)
                if first:
                    requests, p50, p99 = {}, None, None
                else:
                    requests = _rounded(_per_second(_deltas(codes, before[0] if before else None), seconds))
                    window = _bucket_deltas(buckets, before[1] if before else [])
                    p50, p99 = (_ms(quantile(0.5, window)), _ms(quantile(0.99, window)))
                inst = per_service.get(name, _ServiceRead())
                sample = Sample(now, requests, p50, p99, _rounded(inst.served), inst.queued, inst.in_flight,
                                c.desired, c.current, c.ready, _rounded(inst.batches))
                self._series.setdefault(name, deque(maxlen=self.size)).append(sample)
            self._gateway = gateway
            self._last_t = now

    def _read_gateway(self) -> dict[str, tuple[dict[str, float], list[tuple[float, float]]]]:
        """Cumulative requests by code and latency buckets, per endpoint name."""
        out: dict[str, tuple[dict[str, float], list[tuple[float, float]]]] = {}
        for family in self.metrics.requests.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    out.setdefault(s.labels["service"], ({}, []))[0][s.labels["code"]] = s.value
        for family in self.metrics.latency.collect():
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    out.setdefault(s.labels["service"], ({}, []))[1].append((float(s.labels["le"]), s.value))
        for _, buckets in out.values():
            buckets.sort()
        return out

    def _read_instances(self, now: float, seconds: float | None) -> dict[str, _ServiceRead]:
        """Gauges summed and counter rates per service, from each instance's last `/stats`.

        An instance's rates are taken over the time between its own two scrapes (its
        `at`), not the sampler's interval, so the two clocks beating apart add no noise;
        a scrape the sampler already saw keeps the rates it gave.
        """
        out: dict[str, _ServiceRead] = {}
        seen = set()
        for st in self.instances():
            seen.add(st.instance)
            codes = {str(k): float(v) for k, v in (st.data.get("codes") or {}).items()}
            batches = {str(k): float(v) for k, v in (st.data.get("batches") or {}).items()}
            read = out.setdefault(st.service, _ServiceRead())
            read.queued += int(st.data.get("queued", 0) or 0)
            read.in_flight += int(st.data.get("in_flight", 0) or 0)
            before = self._instances.get(st.instance)
            if seconds is None:
                rates: tuple[dict[str, float], dict[str, float]] = ({}, {})  # the first sample: a baseline
            elif before is None:  # new since the last sample: everything it counted is recent
                rates = (_per_second(codes, seconds), _per_second(batches, seconds))
            elif st.at <= before.at:
                rates = before.rates
            else:
                spent = st.at - before.at
                rates = (_per_second(_deltas(codes, before.codes), spent),
                         _per_second(_deltas(batches, before.batches), spent))
            _add(read.served, rates[0])
            _add(read.batches, rates[1])
            self._instances[st.instance] = _InstanceRead(now, st.at, codes, batches, rates)
        for instance in [i for i, r in self._instances.items()
                         if i not in seen and now - r.seen > INSTANCE_BASELINE_TTL_S]:
            del self._instances[instance]
        return out

    # -- what the console reads ----------------------------------------------------------

    def series(self, name: str, since: float | None = None) -> list[Sample] | None:
        """The samples of a service newer than `since`; None for a service not tracked."""
        with self._lock:
            samples = self._series.get(name)
            if samples is None:
                return None
            return [s for s in samples if since is None or s.t > since]

    def latest(self) -> dict[str, Sample]:
        with self._lock:
            return {name: samples[-1] for name, samples in self._series.items() if samples}

    def tracked(self) -> list[str]:
        with self._lock:
            return sorted(self._series)


@dataclass
class _InstanceRead:
    """What the last sample read of one instance."""

    seen: float
    """The sample's time (forgotten INSTANCE_BASELINE_TTL_S after it stops reporting)."""
    at: float
    """When the scraper read it (monotonic)."""
    codes: dict[str, float]
    batches: dict[str, float]
    rates: tuple[dict[str, float], dict[str, float]]
    """Answers/s by code and batches/s by size, as of that read."""


@dataclass
class _ServiceRead:
    queued: int = 0
    in_flight: int = 0
    served: dict[str, float] | None = None
    batches: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.served = self.served or {}
        self.batches = self.batches or {}


def _deltas(now: dict[str, float], before: dict[str, float] | None) -> dict[str, float]:
    out = {}
    for key, value in now.items():
        prev = (before or {}).get(key, 0.0)
        delta = value - prev if value >= prev else value  # the instance restarted
        if delta > 0:
            out[key] = delta
    return out


def _add(total: dict[str, float] | None, more: dict[str, float]) -> None:
    assert total is not None
    for key, value in more.items():
        total[key] = total.get(key, 0.0) + value


def _per_second(counts: dict[str, float] | None, seconds: float | None) -> dict[str, float]:
    if not counts or not seconds:
        return {}
    return {k: v / seconds for k, v in counts.items()}


def _rounded(rates: dict[str, float] | None) -> dict[str, float]:
    return {k: round(v, 3) for k, v in (rates or {}).items()}


def _bucket_deltas(now: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    prev = dict(before)
    return [(upper, max(0.0, count - prev.get(upper, 0.0))) for upper, count in now]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
