"""What the gateway should do with each name, built from the store and what runs: pure functions.

A `Route` per service (its ready instances, or why there are none and whether a
request should wait for one); an `Entry` per endpoint name clients call (its token and
the services behind it by weight, a mirror, or why it is closed). The controller
writes them into the gateway's route table every pass.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from eas.control.backend import AppState
from eas.control.store import DELETED, RUNNING, ServiceRecord, TrafficRecord
from eas.gateway.route_table import Endpoint, Entry, Route
from eas.spec import ServiceSpec

#: How long a request waits for a service woken from autoscaler min 0 (an instance start).
WAKE_FROM_ZERO_S = 60.0


def service_route(rec: ServiceRecord, spec: ServiceSpec, app: AppState | None, reason: str,
                  asleep: bool = False, internal_key: str = "") -> Route:
    """A route serves when at least one instance runs, whatever the app's status.

    `internal_key` is the service's own (eas/control/keys.py): the gateway presents it to
    this service's instances, which accept no other.
    """
    endpoints = tuple(
        Endpoint(f"{rec.name}-{r.replica_id}", *r.endpoint, grpc=r.grpc)
        for r in (app.replicas if app is not None else [])
        if r.state == "RUNNING" and r.endpoint
    )
    rpc = spec.metadata.rpc
    # Requests wait (up to the keepalive) for an instance that is on its way rather
    # than fail: deploys, restarts and rollovers are invisible to callers.
    coming = rec.desired == RUNNING and not reason.startswith("service failed")
    hold = rpc.keepalive / 1000 if coming else 0.0
    max_held = Route.max_held
    if asleep and spec.sleep is not None:
        hold, max_held = spec.sleep.wake_timeout_seconds, spec.sleep.max_held_requests
    elif asleep:
        hold = max(hold, WAKE_FROM_ZERO_S)
    return Route(rec.name, rec.token, endpoints, reason, rpc.keepalive / 1000, rpc.rate_limit, hold,
                 wake_on_demand=asleep, max_held=max_held, internal_key=internal_key,
                 retry_in_flight=retries_in_flight(spec), pass_headers=spec.serving_container is not None,
                 enable_grpc=grpc_passthrough(spec),
                 backflow=(spec.backflow.ratio, spec.backflow.max_body_bytes) if spec.backflow else None)


def grpc_passthrough(spec: ServiceSpec) -> bool:
    """Whether the gateway relays any gRPC method to the service's container: a container
    serves and `metadata.enable_grpc` says it is a gRPC server. For processors the flag
    changes nothing (their gRPC services are always served)."""
    return spec.metadata.enable_grpc and spec.serving_container is not None


def retries_in_flight(spec: ServiceSpec) -> bool:
    """Whether a request whose instance died running it may run again on another
    (`rpc.retry_in_flight`). Unset: yes for built-in processors, whose predictions are
    pure; no for user code and containers, whose handlers may have side effects."""
    chosen = spec.metadata.rpc.retry_in_flight
    if chosen is not None:
        return chosen
    return spec.processor_type != "python" and not spec.containers


def bml_mode(spec: Mapping[str, object]) -> bool:
    """Whether a stored service JSON puts the service in BML mode (eas/spec/bml.py)."""
    block = spec.get("bml")
    return isinstance(block, dict) and block.get("enabled", True) is not False


def bml_face(spec: Mapping[str, object]) -> str:
    """How the gateway shapes a service's answers for BML (route_table.Entry.bml)."""
    if not bml_mode(spec):
        return ""
    return "code" if spec.get("processor_type") == "python" else "framework"


def closed_route(rec: ServiceRecord) -> Route:
    """A service being stopped or deleted: no instance, no waiting."""
    keepalive = rec.spec.get("metadata", {}).get("rpc", {}).get("keepalive", 5000)
    return Route(rec.name, rec.token, (), f"service is {rec.desired.lower()}", float(keepalive) / 1000)


def entries(records: Iterable[ServiceRecord], traffic: Iterable[TrafficRecord],
            running: Mapping[str, int] | None = None) -> tuple[dict[str, Entry], list[str]]:
    """Endpoint names clients may call: every live service's own, then shared ones.

    A group in TrafficMode auto weighs its members by `running` (instances per service,
    as observed this pass), so traffic follows capacity as members scale; equally while
    none runs, so a request still reaches a member that is coming.

    Also returns the traffic rows none of whose services exists any more (in any
    state): the controller removes them.

    Tokens come from one place: a service's endpoint (its own, shared with partners or
    mirrored, or closed after a release) answers to the service's current token; only
    a group, or a shared endpoint whose service was deleted, has a token of its own.
    """
    records = list(records)
    known = {r.name for r in records}
    tokens = {r.name: r.token for r in records}
    live = {r.name: r for r in records if r.desired != DELETED}
    out = {name: Entry(name, r.token, ((name, 100),), bml=bml_face(r.spec)) for name, r in live.items()}
    orphans = []
    for t in traffic:
        backends = tuple((svc, w) for svc, w in t.backends if svc in live)
        if not backends:
            if not any(svc in known for svc, _ in t.backends):
                orphans.append(t.name)
            continue
        if t.kind == "group" and t.mode == "auto":
            counts = tuple((svc, (running or {}).get(svc, 0)) for svc, _ in backends)
            backends = counts if any(n for _, n in counts) else tuple((svc, 1) for svc, _ in backends)
        token = t.token if t.kind == "group" else tokens.get(t.name, t.token)
        if t.kind == "closed":
            if t.name in out:
                target = backends[0][0]
                out[t.name] = Entry(t.name, token, (), closed=(
                    f"'{t.name}' was released into '{target}': call /api/predict/{target}"))
            continue
        mirror = t.mirror if t.mirror and t.mirror[0] in live else None
        out[t.name] = Entry(t.name, token, backends, mirror, bml=bml_face(live[t.name].spec) if t.name in live else "")
    return out, orphans
