"""What the controller needs from the platform that hosts instances, as Ray-free types.

eas/backend/ray_serve.py implements it on Ray Serve; tests implement it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from eas.spec import ServiceSpec


class Backend(Protocol):
    def deploy(self, name: str, spec: ServiceSpec, cache_dir: str, secrets: dict[str, str],
               code_dir: str | None = None) -> None:
        """Create or update the service's instances; returns once the request is accepted."""

    def delete(self, name: str) -> None: ...

    def observe(self) -> dict[str, "AppState"]:
        """What runs now, by service name."""

    def restart_instances(self, name: str, replica_ids: list[str], internal_key: str) -> list[str]:
        """Drain and restart the named instances; returns the ids not found."""

    def gpus(self) -> float:
        """GPUs in the whole cluster (0 without any): what GPU services can be given."""

    def logs(self, name: str, replica_id: str, max_lines: int) -> list[str] | None:
        """The instance's latest log lines, oldest first (its stdout, then its stderr), at
        most `max_lines` of each; None when no such instance runs (DescribeServiceLog)."""


@dataclass
class Replica:
    replica_id: str
    actor_name: str
    state: str  # Serve's ReplicaState: STARTING, UPDATING, RECOVERING, RUNNING, STOPPING, PENDING_MIGRATION
    node_ip: str
    pid: int | None
    start_time: float
    endpoint: tuple[str, int] | None = None
    """(host, port) of the instance's own HTTP server, once it has published it."""
    grpc: tuple[str, int] | None = None
    """(host, port) of its serving container's gRPC server as published on the node
    (`metadata.enable_grpc`), published with `endpoint`; None otherwise."""
    container: str | None = None
    """A container service's instance: its serving container's state as the runtime says
    it (running, exited, ...), None for processors or where it is not known."""


@dataclass
class AppState:
    status: str  # Serve's ApplicationStatus: DEPLOYING, RUNNING, DEPLOY_FAILED, UNHEALTHY, DELETING, NOT_STARTED
    message: str  # for DEPLOY_FAILED, the user-facing reason only
    target: int
    replicas: list[Replica] = field(default_factory=list)
    dead_replicas: int = 0
    version: str | None = None

    @property
    def running(self) -> int:
        return sum(1 for r in self.replicas if r.state == "RUNNING")

    @property
    def pending(self) -> int:
        return sum(1 for r in self.replicas if r.state in ("STARTING", "UPDATING", "RECOVERING"))
