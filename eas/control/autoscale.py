"""How many instances a service should have now: autoscaler, cron scaler and sleep.

Pure decisions from numbers (no Ray, no HTTP), so every rule is unit-tested:

- autoscaler (EAS): per strategy `desired = ceil(current * metric / threshold)`, left
  alone inside a 10 % band, the largest over strategies, clamped to [min, max]; a
  scale-up follows the lowest recommendation of the scale-up window, a scale-down the
  highest of the scale-down window (so a brief dip never drops instances);
- cron scaler: the target of the job that fired most recently sets the count (or, with
  an autoscaler, its floor), in the given time zone; the autoscaler bounds still apply;
- sleep (BML): after `idle_seconds` without a request (inside its validity window) a
  service goes to 0 instances; the next request wakes it to the count it had.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from eas.spec.elastic import AutoscalerSpec, CronJob, CronScalerSpec, OnZero, SleepSpec

TOLERANCE = 0.1
#: Earlier firings of a cron job looked at, when ExcludeDates match the latest ones.
CRON_EXCLUDE_LOOKBACK = 1000
#: EAS metric names that are not a `Load` field name as they are.
METRIC_FIELDS = {"queue[backlog]": "backlog"}


@dataclass
class Load:
    """Per-instance averages over the last interval, from the instances' own counters."""

    qps: float = 0.0
    cpu: float = 0.0
    """Utilisation in percent of the instance's `metadata.cpu`."""
    inflight: float = 0.0
    backlog: float = 0.0
    """Requests waiting in the service's input queue per instance (an Async service)."""


@dataclass
class Decision:
    desired: int
    reason: str
    at: float = field(default_factory=time.time)


def recommend(current: int, load: Load, spec: AutoscalerSpec) -> tuple[int, str]:
    """The raw autoscaler recommendation and the strategy that set it."""
    best, why = spec.min, f"at min {spec.min}"
    base = max(current, 1)
    for strategy in spec.scaleStrategies:
        if not strategy.measured:  # an EAS metric not measured here (kept, named in an event)
            continue
        value = getattr(load, METRIC_FIELDS.get(strategy.metricName, strategy.metricName))
        ratio = value / strategy.threshold
        wanted = current if abs(ratio - 1) <= TOLERANCE else math.ceil(base * ratio)
        if value == 0 and current == 0:
            wanted = 0
        if wanted > best or best == spec.min:
            best = max(best, wanted)
            why = f"{strategy.metricName} {value:.1f} per instance vs threshold {strategy.threshold:g}"
    return min(spec.max, max(spec.min, best)), why


def cron_target(spec: CronScalerSpec, now: float) -> tuple[int, str] | None:
    """Target of the job that fired most recently, with its schedule; None before any fired."""
    from croniter import croniter

    zone = ZoneInfo(spec.timezone)
    moment = datetime.fromtimestamp(now, zone)
    latest: tuple[datetime, CronJob] | None = None
    excluded = spec.exclude_dates or []
    for job in spec.jobs:
        times = croniter(job.schedule, moment)
        fired = times.get_prev(datetime)
        # A firing that an ExcludeDates expression matches does not count: the one before does.
        for _ in range(CRON_EXCLUDE_LOOKBACK):
            if not any(croniter.match(e, fired) for e in excluded):
                break
            fired = times.get_prev(datetime)
        else:
            continue
        if latest is None or fired > latest[0]:
            latest = (fired, job)
    if latest is None:
        return None
    return latest[1].target, f"cron '{latest[1].schedule}' ({spec.timezone}) since {latest[0]:%Y-%m-%d %H:%M}"


class Scaler:
    """Remembers recommendations per service so stabilisation windows can be applied."""

    def __init__(self) -> None:
        self._history: dict[str, deque[tuple[float, int]]] = {}
        self.last: dict[str, Decision] = {}

    def forget(self, service: str) -> None:
        self._history.pop(service, None)
        self.last.pop(service, None)

    def decide(self, service: str, now: float, current: int, base: int, load: Load,
               autoscaler: AutoscalerSpec | None, cron: CronScalerSpec | None,
               sleep: SleepSpec | None, idle_s: float) -> Decision:
        """The instance count a running service should have now, and why."""
        desired, reason = base, f"metadata.instance {base}"
        floor = None
        if cron is not None and (fired := cron_target(cron, now)) is not None:
            floor, reason = fired
            desired = floor
        if autoscaler is not None:
            raw, why = recommend(current, load, autoscaler)
            if floor is not None and floor > raw:
                raw, why = floor, reason
            desired = min(autoscaler.max, max(autoscaler.min, self._stabilise(service, now, current, raw, autoscaler)))
            reason = why
            if desired == 0:  # only with min 0: go to zero only after the grace period idle
                on_zero = autoscaler.behavior.onZero or OnZero(scaleDownGracePeriodSeconds=0)
                if idle_s < on_zero.scaleDownGracePeriodSeconds:
                    desired = current if current > 0 else on_zero.scaleUpActivationReplicas
                    reason = "requests within the onZero grace period"
                else:
                    reason = f"no request for {idle_s:.0f} s (onZero grace period)"
        if sleep is not None and sleep.active(time.time()) and idle_s >= sleep.idle_seconds:
            desired, reason = 0, f"sleeping: no request for {idle_s:.0f} s"
        decision = Decision(desired, reason, now)
        previous = self.last.get(service)
        if previous is None or previous.desired != desired:
            self.last[service] = decision
        return decision

    def _stabilise(self, service: str, now: float, current: int, raw: int, spec: AutoscalerSpec) -> int:
        up = spec.behavior.scaleUp.stabilizationWindowSeconds
        down = spec.behavior.scaleDown.stabilizationWindowSeconds
        history = self._history.setdefault(service, deque())
        history.append((now, raw))
        keep = max(up, down)
        while history and history[0][0] < now - keep:
            history.popleft()
        if raw > current:
            return max(current, min(r for t, r in history if t >= now - up))
        if raw < current:
            return min(current, max(r for t, r in history if t >= now - down))
        return current


class LoadTracker:
    """Per-instance rates from the instances' cumulative counters, averaged per service."""

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, float, float]] = {}  # instance -> (answered, cpu s, at)

    def update(self, samples: list[tuple[str, str, dict[str, float], float]],
               cpus: dict[str, float]) -> tuple[dict[str, Load], set[str]]:
        """`samples`: (service, instance, stats, monotonic time). Returns loads and the
        services that answered anything since the last update (they are not idle)."""
        per_service: dict[str, list[Load]] = {}
        active: set[str] = set()
        seen = set()
        for service, instance, stats, at in samples:
            seen.add(instance)
            answered = float(sum(int(v) for v in stats.get("codes", {}).values()))
            cpu_s = float(stats.get("cpu_seconds", 0.0))
            prev = self._prev.get(instance)
            self._prev[instance] = (answered, cpu_s, at)
            if prev is None or at <= prev[2]:
                continue
            dt = at - prev[2]
            if answered > prev[0]:
                active.add(service)
            load = Load(
                qps=max(0.0, answered - prev[0]) / dt,
                cpu=100 * max(0.0, cpu_s - prev[1]) / dt / max(cpus.get(service, 1.0), 1e-6),
                inflight=float(stats.get("in_flight", 0)),
            )
            per_service.setdefault(service, []).append(load)
        for gone in set(self._prev) - seen:
            del self._prev[gone]
        loads = {
            service: Load(
                qps=sum(x.qps for x in items) / len(items),
                cpu=sum(x.cpu for x in items) / len(items),
                inflight=sum(x.inflight for x in items) / len(items),
            )
            for service, items in per_service.items()
        }
        return loads, active
