"""Prometheus metrics: what the gateway measures itself, plus what instances report.

The gateway times every request it forwards (total and processor time, by service and
status); for streamed answers also the time to the first byte and the bytes sent, and
it counts requests it sent again (never delivered, or retried after their instance died),
instances it took out of rotation, and WebSocket sessions and frames. Instance-side numbers (queue depth, in-flight, batch sizes, cold start, and
answers given to DIRECT callers too) come from each instance's `/stats`, which the
control plane's scraper reads every second (eas/control/scaling.py); they are turned
into metric families at scrape time, so nothing is kept twice.

Label sets stay bounded: requests for names that do not exist count under `_unknown`
(the gateway's doing), and the label sets of a service that is gone (deleted: no longer
among the controller's services) are removed once nothing has been observed for it for
`FORGET_AFTER_S`; a group endpoint (not a service) idle that long is forgotten too and
starts again from zero (Prometheus reads that as a counter reset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Seconds without an observation after which a name that is not a current service loses its label sets.
FORGET_AFTER_S = 300.0


@dataclass
class InstanceStats:
    """The last `/stats` answer of one instance, and when it was read."""

    service: str
    instance: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def answered(self) -> int:
        return sum(int(v) for v in self.data.get("codes", {}).values())


@dataclass
class ServiceCounts:
    desired: int
    current: int
    ready: int
    backlog: int | None = None
    """An Async service's requests not answered yet (its input queue); None for the others."""


class GatewayMetrics:
    def __init__(self, forget_after_s: float = FORGET_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._seen: dict[str, list[Any]] = {}
        """name -> (last observed, status codes observed): the label sets to remove later."""
        self._services: Callable[[], dict[str, ServiceCounts]] = dict
        self.registry = CollectorRegistry()
        self.requests = Counter("eas_requests", "Requests answered by the gateway",
                                ["service", "code"], registry=self.registry)
        self.latency = Histogram("eas_request_seconds", "Gateway time per request, end to end",
                                 ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.processor = Histogram("eas_processor_seconds", "Time inside the instance per request",
                                   ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.first_byte = Histogram("eas_first_byte_seconds", "Streamed answers: time to the first byte of the body",
                                    ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.streamed_bytes = Counter("eas_streamed_bytes", "Bytes of streamed answers sent to clients",
                                      ["service"], registry=self.registry)
        self.resent = Counter("eas_resent_requests", "Requests sent to another instance: 'undelivered' (never "
                              "reached one), 'in_flight' (their instance died running them; rpc.retry_in_flight)",
                              ["service", "reason"], registry=self.registry)
        self.taken_out = Counter("eas_instances_taken_out", "Instances this gateway took out of rotation after a "
                                 "connection failure", ["service"], registry=self.registry)
        self.ws_sessions = Counter("eas_websocket_sessions", "WebSocket upgrades by answer (101: relayed)",
                                   ["service", "code"], registry=self.registry)
        self.ws_open = Gauge("eas_websocket_open", "WebSocket sessions being relayed now", ["service"],
                             registry=self.registry)
        self.ws_frames = Counter("eas_websocket_frames", "WebSocket frames relayed, 'in' from clients, 'out' to them",
                                 ["service", "direction"], registry=self.registry)
        self._extra: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}
        """name -> (metric, labels) observed beyond the per-request ones: removed with the name."""

    def observe(self, service: str, status: int, seconds: float, processor_ms: str | None) -> None:
        code = str(status)
        seen = self._seen.get(service)
        if seen is None:
            seen = self._seen[service] = [0.0, set()]
        seen[0] = self._clock()
        seen[1].add(code)
        self.requests.labels(service, code).inc()
        self.latency.labels(service).observe(seconds)
        if processor_ms:
            try:
                self.processor.labels(service).observe(float(processor_ms) / 1000)
            except ValueError:
                pass

    def label(self, metric: Any, service: str, *rest: str) -> Any:
        """`metric.labels(service, *rest)`, remembered so the label set leaves with the name.
        For the rarer observations (streams, resends, WebSockets), not the per-request ones."""
        labels = (service, *rest)
        self._extra.setdefault(service, set()).add((metric, labels))
        seen = self._seen.get(service)
        if seen is None:
            seen = self._seen[service] = [0.0, set()]
        seen[0] = self._clock()
        return metric.labels(*labels)

    def observe_stream(self, service: str, first_byte_s: float | None, sent: int) -> None:
        """A streamed answer ended: its time to first byte and the bytes that went out
        (its total time and status went through `observe`)."""
        if first_byte_s is not None:
            self.label(self.first_byte, service).observe(first_byte_s)
        if sent:
            self.label(self.streamed_bytes, service).inc(sent)

    def attach(self, instances: Callable[[], Iterable[InstanceStats]],
               services: Callable[[], dict[str, ServiceCounts]]) -> None:
        self._services = services
        self.registry.register(_StateCollector(instances, services))

    def render(self) -> bytes:
        self.forget_gone()
        return generate_latest(self.registry)

    def forget_gone(self) -> list[str]:
        """Remove the label sets of names that are not current services and have not been
        observed for `forget_after_s`; returns those names."""
        current = self._services()
        now = self._clock()
        gone = [name for name, (at, _) in list(self._seen.items())
                if name != "_unknown" and name not in current and now - at > self.forget_after_s]
        for name in gone:
            _, codes = self._seen.pop(name)
            for code in codes:
                _remove(self.requests, name, code)
            _remove(self.latency, name)
            _remove(self.processor, name)
            for metric, labels in self._extra.pop(name, ()):
                _remove(metric, *labels)
        return gone


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:  # never observed with these labels
        pass


class _StateCollector(Collector):
    def __init__(self, instances: Callable[[], Iterable[InstanceStats]],
                 services: Callable[[], dict[str, ServiceCounts]]) -> None:
        self.instances = instances
        self.services = services

    def collect(self) -> Iterable[Any]:
        counts = GaugeMetricFamily("eas_instances", "Instances of a service by kind",
                                   labels=["service", "kind"])
        for name, c in sorted(self.services().items()):
            counts.add_metric([name, "desired"], c.desired)
            counts.add_metric([name, "current"], c.current)
            counts.add_metric([name, "ready"], c.ready)
        yield counts
        backlog = GaugeMetricFamily("eas_queue_backlog", "Requests of an Async service's input queue not answered yet",
                                    labels=["service"])
        for name, c in sorted(self.services().items()):
            if c.backlog is not None:
                backlog.add_metric([name], c.backlog)
        yield backlog
        in_flight = GaugeMetricFamily("eas_instance_in_flight", "Requests running or queued at an instance",
                                      labels=["service", "instance"])
        queued = GaugeMetricFamily("eas_instance_queue_depth", "Requests waiting for a worker",
                                   labels=["service", "instance"])
        load = GaugeMetricFamily("eas_instance_cold_start_seconds", "Model fetch and load time of an instance",
                                 labels=["service", "instance"])
        answers = CounterMetricFamily("eas_instance_requests", "Answers given by an instance (all callers)",
                                      labels=["service", "instance", "code"])
        batches = CounterMetricFamily("eas_batches", "Server-side batches run, by size",
                                      labels=["service", "instance", "size"])
        for st in self.instances():
            key = [st.service, st.instance]
            in_flight.add_metric(key, st.data.get("in_flight", 0))
            queued.add_metric(key, st.data.get("queued", 0))
            load.add_metric(key, st.data.get("load_seconds", 0))
            for code, n in st.data.get("codes", {}).items():
                answers.add_metric(key + [str(code)], n)
            for size, n in st.data.get("batches", {}).items():
                batches.add_metric(key + [str(size)], n)
        yield from (in_flight, queued, load, answers, batches)
