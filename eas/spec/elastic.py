"""The elastic blocks of a service JSON: `autoscaler`, `cron_scaler` and `sleep`.

Schemas only; what they decide lives in eas/control/autoscale.py. Field names are
EAS's (camelCase), so a service JSON written for EAS validates unchanged.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


#: Metrics this platform measures per instance (eas/control/autoscale.py `Load`).
MEASURED_METRICS = ("qps", "cpu", "inflight", "queue[backlog]")
#: EAS metric names: a family, with a qualifier in brackets for some (`gpu[util]`,
#: `queue[backlog]`). Matched so a typo (`qpx`) is still refused.
_EAS_METRIC = re.compile(r"(qps|cpu|inflight|gpu|memory|rt|queue)(\[[a-z0-9_.]+\])?")


class ScaleStrategy(_Model):
    """One EAS scaling strategy. Every EAS metric family is accepted (`gpu[util]`,
    `queue[backlog]` with its `service`, ...); only `MEASURED_METRICS` act here, the
    others are kept and named like any field without effect. `queue[backlog]` is the
    backlog of the service's own input queue (an Async service; `service` may name it)."""

    metricName: str  # noqa: N815 - EAS field names
    threshold: float = Field(..., gt=0)
    service: str | None = None

    @field_validator("metricName")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not _EAS_METRIC.fullmatch(v):
            raise ValueError(f"'{v}' is not an EAS metric: {', '.join(MEASURED_METRICS)} act here; gpu[util], "
                             "memory, rt are kept without effect")
        return v

    @property
    def measured(self) -> bool:
        return self.metricName in MEASURED_METRICS


class Window(_Model):
    stabilizationWindowSeconds: float = Field(0, ge=0)  # noqa: N815


class OnZero(_Model):
    scaleDownGracePeriodSeconds: float = Field(300, ge=0)  # noqa: N815
    scaleUpActivationReplicas: int = Field(1, ge=1)  # noqa: N815


class Behavior(_Model):
    scaleUp: Window = Field(default_factory=lambda: Window(stabilizationWindowSeconds=0))  # noqa: N815
    scaleDown: Window = Field(default_factory=lambda: Window(stabilizationWindowSeconds=300))  # noqa: N815
    onZero: OnZero | None = None  # noqa: N815


class AutoscalerSpec(_Model):
    min: int = Field(1, ge=0)
    max: int = Field(..., ge=1, le=1000)
    scaleStrategies: list[ScaleStrategy] = Field(..., min_length=1)  # noqa: N815
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalerSpec":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self

    def unmeasured(self) -> list[str]:
        """The strategies that cannot act here, as `scaleStrategies[i].metricName=<name>`."""
        return [f"autoscaler.scaleStrategies[{i}].metricName={s.metricName}"
                for i, s in enumerate(self.scaleStrategies) if not s.measured]


def _check_cron(v: str) -> str:
    from croniter import croniter

    if len(v.split()) != 5 or not croniter.is_valid(v):
        raise ValueError(f"'{v}' is not a cron expression (minute hour day month weekday)")
    return v


class CronJob(_Model):
    schedule: str
    target: int = Field(..., ge=0, le=1000)
    name: str | None = None
    """EAS's `ScaleJobs[].Name` (the cron scaler API keeps it here)."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)


class CronScalerSpec(_Model):
    timezone: str = "UTC"
    jobs: list[CronJob] = Field(..., min_length=1)
    exclude_dates: list[str] | None = None
    """EAS's `ExcludeDates`: cron expressions; a job does not fire at a time one matches."""

    @field_validator("exclude_dates")
    @classmethod
    def _excluded(cls, v: list[str] | None) -> list[str] | None:
        return [_check_cron(e) for e in v] if v is not None else None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}' (use an IANA name such as Asia/Shanghai)") from None
        return v


class SleepSpec(_Model):
    idle_seconds: float = Field(..., gt=0)
    wake_timeout_seconds: float = Field(60, gt=0, le=600)
    max_held_requests: int = Field(1000, ge=1, le=100_000)
    """Requests held at the gateway while the service wakes; more get 503 at once."""
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def active(self, now: float) -> bool:
        moment = datetime.fromtimestamp(now, timezone.utc)
        if self.valid_from and moment < _aware(self.valid_from):
            return False
        return not (self.valid_until and moment >= _aware(self.valid_until))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
