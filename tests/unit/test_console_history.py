"""The console's metrics history (eas/console/history.py): rates, percentiles, counter
resets, bounded memory and the sampler thread, over the real GatewayMetrics with the
instance stats and counts handed in by the test (sampled by hand with given times)."""

from __future__ import annotations

import threading

import pytest

from eas.console.history import MetricsHistory, quantile
from eas.gateway.metrics import GatewayMetrics, InstanceStats, ServiceCounts


class Sources:
    """What the controller would hand the history: instance stats and instance counts."""

    def __init__(self) -> None:
        self.stats: dict[str, InstanceStats] = {}
        self.counts: dict[str, ServiceCounts] = {"svc": ServiceCounts(2, 2, 1)}

    def instance(self, name: str, codes: dict[str, int], at: float, queued: int = 0, in_flight: int = 0,
                 batches: dict[str, int] | None = None, service: str = "svc") -> None:
        """The scraper's read of an instance, made at `at` (its monotonic clock)."""
        self.stats[name] = InstanceStats(service, name, {"codes": codes, "queued": queued, "in_flight": in_flight,
                                                          "batches": batches or {}}, at)


@pytest.fixture
def setup() -> tuple[GatewayMetrics, Sources, MetricsHistory]:
    metrics, sources = GatewayMetrics(), Sources()
    history = MetricsHistory(metrics, lambda: list(sources.stats.values()), lambda: sources.counts,
                             interval_s=2.0, window_s=10.0)
    return metrics, sources, history


def test_quantile_interpolates_inside_a_bucket() -> None:
    buckets = [(0.001, 0.0), (0.005, 50.0), (0.01, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.005)
    assert quantile(0.25, buckets) == pytest.approx(0.003)
    assert quantile(0.99, buckets) == pytest.approx(0.0099)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1, "past the last bound: the bound"


def test_rates_percentiles_gauges_and_batches(setup) -> None:
    metrics, sources, history = setup
    sources.instance("svc-r0", {"200": 10}, at=10.0, batches={"4": 1})
    history.sample(now=100.0)
    first = history.series("svc")
    assert first is not None and len(first) == 1
    assert first[0].requests == {} and first[0].p50_ms is None, "the first sample is only a baseline"

    for _ in range(8):
        metrics.observe("svc", 200, 0.004, "3.0")
    for _ in range(2):
        metrics.observe("svc", 429, 0.0005, None)
    sources.instance("svc-r0", {"200": 16, "503": 1}, at=12.0, queued=3, in_flight=5, batches={"4": 3, "8": 1})
    sources.instance("svc-r1", {"200": 2}, at=12.0, queued=1, in_flight=1)  # a new instance: counts from 0
    history.sample(now=102.0)
    s = history.series("svc")[-1]
    assert s.requests == {"200": 4.0, "429": 1.0}
    assert 2.5 < s.p50_ms <= 5.0 and s.p99_ms <= 5.0
    assert s.served == {"200": 4.0, "503": 0.5}
    assert (s.queued, s.in_flight, s.desired, s.current, s.ready) == (4, 6, 2, 2, 1)
    assert s.batches == {"4": 1.0, "8": 0.5}

    # Rates are over the instance's own scrapes: 3 answers between reads 1.5 s apart.
    del sources.stats["svc-r1"]  # gone
    sources.instance("svc-r0", {"200": 19, "503": 1}, at=13.5)
    history.sample(now=104.0)
    assert history.series("svc")[-1].served == {"200": 2.0}
    # The same read seen again keeps its rates; an instance that restarted counts from zero.
    history.sample(now=106.0)
    assert history.series("svc")[-1].served == {"200": 2.0}
    sources.instance("svc-r0", {"200": 3}, at=15.5)
    history.sample(now=108.0)
    assert history.series("svc")[-1].served == {"200": 1.5}, "3 new answers over 2 s"
    assert history.series("svc", since=106.0) == history.series("svc")[-1:]
    assert history.series("nope") is None


def test_memory_is_bounded_and_deleted_services_leave(setup) -> None:
    _, sources, history = setup
    sources.counts["other"] = ServiceCounts(1, 1, 1)
    for i in range(20):
        history.sample(now=float(i * 2))
    assert len(history.series("svc")) == 5, "window 10 s / interval 2 s"
    assert history.tracked() == ["other", "svc"]
    del sources.counts["other"]
    history.sample(now=40.0)
    assert history.tracked() == ["svc"] and history.series("other") is None
    assert set(history.latest()) == {"svc"} and history.latest()["svc"].t == 40.0


def test_instances_gone_for_long_are_forgotten(setup) -> None:
    _, sources, history = setup
    sources.instance("svc-r0", {"200": 5}, at=0.0)
    history.sample(now=0.0)
    del sources.stats["svc-r0"]
    history.sample(now=10.0)
    assert "svc-r0" in history._instances, "a missed scrape keeps its baseline"
    history.sample(now=500.0)
    assert history._instances == {}


def test_the_sampler_thread_samples_until_stopped() -> None:
    sampled = threading.Event()
    calls = []

    def counts() -> dict[str, ServiceCounts]:
        calls.append(1)
        if len(calls) >= 2:
            sampled.set()
        return {"svc": ServiceCounts(1, 1, 1)}

    history = MetricsHistory(GatewayMetrics(), list, counts, interval_s=0.01)
    history.start()
    try:
        assert sampled.wait(10), "the sampler did not run twice"
    finally:
        history.stop()
    assert history._thread is None and len(history.series("svc")) >= 2
