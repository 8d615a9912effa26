"""EAS blocks about Alibaba Cloud's own infrastructure: accepted and kept, no effect here.

`cloud` (ECS instance types, spot prices, the VPC of the instances), `networking`
(EAS gateways, internet endpoints), `unit` (instances per distributed-inference unit),
`runtime` (crash blocking) and `dockerAuth` describe machines and networks that a
self-hosted Ray cluster does not have. A service JSON written for EAS carries them, so
they validate (typos in them are refused like anywhere else), are stored and shown by
`desc`, and are named once in an event ("kept, no effect here: ..."). On this platform
the Ray cluster is the machine pool, and the gateway is the network entry.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from eas.spec.base import Strict


class CloudInstance(Strict):
    type: str
    capacity: int | str | None = None
    spot_price_limit: float | None = None
    spot_discount_limit: float | None = None
    zone: str | None = None


class CloudComputing(Strict):
    instance_type: str | None = None
    instances: list[CloudInstance] | None = None
    disable_spot_protection_period: bool | None = None
    spot_strategy: str | None = None


class CloudNetworking(Strict):
    vpc_id: str | None = None
    vswitch_id: str | None = None
    security_group_id: str | None = None
    default_route: str | None = None


class CloudSpec(Strict):
    computing: CloudComputing | None = None
    networking: CloudNetworking | None = None
    logging: dict[str, Any] | None = None


class NetworkingSpec(Strict):
    gateway: str | None = None
    disable_internet_endpoint: bool | None = None
    gateway_policy: dict[str, Any] | None = None


class UnitSpec(Strict):
    size: int = Field(..., ge=1)


class RuntimeSpec(Strict):
    enable_crash_block: bool | None = None
