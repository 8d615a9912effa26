"""Release and traffic rules: one endpoint name, several services behind it by weight.

Versions, blue-green partners, A/B weights, groups and mirrors are one idea: an
endpoint name that clients call (and whose token they hold) sends each request to one
of several services, picked at random by weight, and may copy a share to a shadow.
The store keeps that as a `traffic` row; the controller turns rows into gateway
entries (eas/control/routing.py). The original endpoint of a service never changes.
"""

from __future__ import annotations

import secrets
import string

from eas.control import store as st
from eas.protocols.auth import generate_token

#: TrafficMode of a group formed by `metadata.group`: members weighted by running instances.
AUTO = "auto"


def partner_name(original: str) -> str:
    """`<name>_<6 letters>`: a blue-green partner keeps its origin visible in its name."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))
    return f"{original}_{suffix}"[:63]


def add_partner(store: st.Store, original: st.ServiceRecord, partner: str) -> None:
    """Blue-green step one: the partner joins the original endpoint at weight 0."""
    # No token on the row: the endpoint answers to the original service's own (routing.py).
    row = store.traffic().get(original.name) or st.TrafficRecord(
        original.name, "service", "", [(original.name, 100)])
    row.backends = [b for b in row.backends if b[0] != partner] + [(partner, 0)]
    store.put_traffic(row, original.name, f"blue-green partner {partner} created (weight 0)")


def release_shares(backends: list[tuple[str, int]], partner: str, weight: int) -> list[tuple[str, int]]:
    """`release <partner> -w N`: the partner takes N %, the others share the rest in
    proportion to their weights (equally when they all had 0)."""
    others = [(s, w) for s, w in backends if s != partner]
    rest = 100 - weight
    total = sum(w for _, w in others)
    if total:
        shares = [(s, round(rest * w / total)) for s, w in others]
    else:
        shares = [(s, rest // len(others)) for s, _ in others]
    return shares + [(partner, weight)]


def group_conflict(store: st.Store, group: str, service: str) -> str | None:
    """Why `service` cannot join `group` (a name another service or a shared endpoint
    holds), or None."""
    if group == service:
        return f"metadata.group: '{group}' is this service's own name; pick another group name"
    row = store.traffic().get(group)
    if (row is not None and row.kind != "group") or any(r.name == group for r in store.list()):
        return f"metadata.group: '{group}' is a service name; pick another group name"
    return None


def join_group(store: st.Store, service: str, group: str | None, previous: str | None = None) -> None:
    """`metadata.group` as EAS reads it: the service joins the group, which is created
    with its first member (a token of its own, TrafficMode auto); a service whose group
    changed leaves the old one (a group formed this way goes with its last member).
    Joining a group made with the group API keeps that group's mode and weights; the
    newcomer gets weight 100 there (change it with `eascmd group modify`)."""
    if previous and previous != group:
        row = store.traffic().get(previous)
        if row is not None and row.kind == "group":
            row.backends = [(s, w) for s, w in row.backends if s != service]
            if row.backends or row.mode != AUTO:
                store.put_traffic(row, service, f"left group '{previous}'")
            else:
                store.delete_traffic(previous, service, f"left group '{previous}', its last member: group removed")
    if not group:
        return
    row = store.traffic().get(group)
    if row is None:
        store.put_traffic(st.TrafficRecord(group, "group", generate_token(), [(service, 100)], mode=AUTO), service,
                          f"joined group '{group}' (created; TrafficMode auto: weighted by running instances)")
    elif all(s != service for s, _ in row.backends):
        row.backends = [*row.backends, (service, 100)]
        store.put_traffic(row, service, f"joined group '{group}'")
