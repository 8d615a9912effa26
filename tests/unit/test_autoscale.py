"""Scaling decisions from numbers: EAS's formula, windows, cron and sleep."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from eas.control.autoscale import Load, LoadTracker, Scaler, cron_target, recommend
from eas.spec import AutoscalerSpec, CronScalerSpec, SleepSpec


def auto(**kw):
    base = {"min": 1, "max": 5, "scaleStrategies": [{"metricName": "qps", "threshold": 10}],
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                         "scaleDown": {"stabilizationWindowSeconds": 30}}}
    return AutoscalerSpec.model_validate({**base, **kw})


def test_eas_formula_band_and_bounds():
    spec = auto()
    assert recommend(2, Load(qps=30), spec)[0] == 5          # ceil(2 * 30/10) = 6, capped at max 5
    assert recommend(2, Load(qps=15), spec)[0] == 3          # ceil(2 * 1.5)
    assert recommend(2, Load(qps=10.5), spec)[0] == 2        # inside the 10 % band: stay
    assert recommend(3, Load(qps=1), spec)[0] == 1           # ceil(0.3) = 1
    both = auto(scaleStrategies=[{"metricName": "qps", "threshold": 10}, {"metricName": "cpu", "threshold": 50}])
    desired, why = recommend(2, Load(qps=10, cpu=100), both)
    assert desired == 4 and why.startswith("cpu"), "the largest over strategies wins"


def test_windows_scale_up_at_once_and_down_only_after_the_window():
    scaler, spec = Scaler(), auto()
    d = scaler.decide("s", 0, 1, 1, Load(qps=40), spec, None, None, idle_s=0)
    assert d.desired == 4
    d = scaler.decide("s", 10, 4, 1, Load(qps=1), spec, None, None, idle_s=0)
    assert d.desired == 4, "a dip inside the scale-down window changes nothing"
    d = scaler.decide("s", 41, 4, 1, Load(qps=1), spec, None, None, idle_s=0)
    assert d.desired == 1
    assert scaler.last["s"].desired == 1 and "qps" in scaler.last["s"].reason


def test_cron_sets_the_count_in_its_time_zone():
    cron = CronScalerSpec.model_validate({"timezone": "Asia/Shanghai", "jobs": [
        {"schedule": "0 9 * * 1-5", "target": 4}, {"schedule": "0 18 * * 1-5", "target": 1}]})
    # Monday 2026-11-23 10:00 in Shanghai is 02:00 UTC.
    at_ten = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc).timestamp()
    assert cron_target(cron, at_ten)[0] == 4
    at_night = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc).timestamp()  # 20:00 Shanghai
    assert cron_target(cron, at_night)[0] == 1
    d = Scaler().decide("s", at_ten, 1, 2, Load(), None, cron, None, idle_s=0)
    assert d.desired == 4 and "cron" in d.reason
    floor = Scaler().decide("s", at_ten, 1, 2, Load(qps=0), auto(max=3), cron, None, idle_s=0)
    assert floor.desired == 3, "cron is the autoscaler's floor, inside its bounds"


def test_sleep_after_idle_within_its_window():
    sleep = SleepSpec(idle_seconds=60)
    assert Scaler().decide("s", 0, 2, 2, Load(), None, None, sleep, idle_s=30).desired == 2
    d = Scaler().decide("s", 0, 2, 2, Load(), None, None, sleep, idle_s=61)
    assert d.desired == 0 and "sleeping" in d.reason
    later = SleepSpec(idle_seconds=60, valid_from=datetime(2999, 1, 1, tzinfo=timezone.utc))
    assert Scaler().decide("s", 0, 2, 2, Load(), None, None, later, idle_s=600).desired == 2


def test_on_zero_grace_period_and_activation():
    spec = auto(min=0, behavior={"onZero": {"scaleDownGracePeriodSeconds": 100, "scaleUpActivationReplicas": 2}})
    assert Scaler().decide("s", 0, 1, 1, Load(), spec, None, None, idle_s=50).desired == 1
    assert Scaler().decide("s", 0, 1, 1, Load(), spec, None, None, idle_s=150).desired == 0
    woken = Scaler().decide("s", 0, 0, 1, Load(), spec, None, None, idle_s=0)
    assert woken.desired == 2


def test_invalid_specs_say_why():
    with pytest.raises(ValidationError, match="min"):
        auto(min=4, max=2)
    with pytest.raises(ValidationError, match="cron expression"):
        CronScalerSpec.model_validate({"jobs": [{"schedule": "every day", "target": 1}]})
    with pytest.raises(ValidationError, match="time zone"):
        CronScalerSpec.model_validate({"timezone": "Mars/Base", "jobs": [{"schedule": "0 9 * * *", "target": 1}]})


def test_load_tracker_rates_from_counters():
    tracker = LoadTracker()
    loads, active = tracker.update([("s", "s-1", {"codes": {"200": 10}, "cpu_seconds": 1.0}, 100.0)], {"s": 1})
    assert loads == {} and active == set()
    loads, active = tracker.update([("s", "s-1", {"codes": {"200": 30}, "cpu_seconds": 1.5, "in_flight": 2},
                                     102.0)], {"s": 0.5})
    assert loads["s"].qps == pytest.approx(10) and loads["s"].cpu == pytest.approx(50)
    assert loads["s"].inflight == 2 and active == {"s"}


def test_cron_exclude_dates_skip_those_firings() -> None:
    """EAS's ExcludeDates (kept as `exclude_dates`): a firing one matches does not count,
    the job's firing before it (or another job's) does."""
    cron = CronScalerSpec.model_validate({"timezone": "UTC", "exclude_dates": ["* * * * 0,6"], "jobs": [
        {"name": "morning", "schedule": "0 9 * * *", "target": 4}, {"schedule": "0 18 * * *", "target": 1}]})
    saturday_ten = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc).timestamp()
    assert cron_target(cron, saturday_ten)[0] == 1, "Saturday's 09:00 is excluded: Friday's 18:00 holds"
    monday_ten = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc).timestamp()
    assert cron_target(cron, monday_ten)[0] == 4
    with pytest.raises(ValidationError, match="exclude_dates"):
        CronScalerSpec.model_validate({"exclude_dates": ["weekends"], "jobs": [{"schedule": "0 9 * * *", "target": 1}]})
