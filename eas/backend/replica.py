"""What runs inside each Ray Serve replica: one instance of a service.

A replica builds the instance (runtime + core + HTTP server, eas/instance/), publishes
its HTTP endpoint in Ray's internal KV once credentials are set, and on shutdown
unpublishes, lets requests in flight finish, then closes. Serve places, counts,
health-checks and replaces replicas; the requests themselves go straight to the
instance server, from the gateway or from SDKs in DIRECT mode.
"""

from __future__ import annotations

import time
from typing import Any

from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.instance import container
from eas.instance.runtime import ContainerHost, ServiceRuntime

#: Ray internal-KV namespace and key prefix where instances publish their HTTP endpoint.
KV_NAMESPACE = "eas"
KV_PREFIX = b"endpoint/"
#: Where a service's secrets (token, its internal key) wait for its replicas in the same
#: KV; Serve's user_config carries only their digest (eas/backend/ray_serve.py).
SECRETS_PREFIX = b"secrets/"
#: Seconds a stopping instance keeps serving after unpublishing, so gateways (which
#: refresh their routes every second) stop sending to it before it closes.
DRAIN_S = 2.0


def secrets_key(service: str) -> bytes:
    return SECRETS_PREFIX + service.encode()


Address = tuple[str, int]


def endpoint_value(http: Address, grpc: Address | None = None) -> bytes:
    """What an instance publishes under its KV key: "host:port" of its HTTP server, then,
    for a container service with `metadata.enable_grpc`, " host:port" of its serving
    container's gRPC server (the gateway relays gRPC calls there, not through the
    instance's HTTP server). One value, so both appear and vanish together."""
    text = f"{http[0]}:{http[1]}" + (f" {grpc[0]}:{grpc[1]}" if grpc else "")
    return text.encode()


def parse_endpoint_value(value: bytes) -> tuple[Address, Address | None]:
    """`endpoint_value` read back: (HTTP address, gRPC address or None)."""
    first, _, second = value.decode().partition(" ")

    def address(text: str) -> Address:
        host, _, port = text.rpartition(":")
        return host, int(port)

    return address(first), address(second) if second else None


class ServiceReplica:
    """A Serve replica: one ServiceRuntime behind its own HTTP server (eas/instance/http.py)."""

    def __init__(self, spec: dict[str, Any], cache_dir: str) -> None:
        import ray
        from ray import serve

        # The runtime makes the storage mounts and the model local on this node (the model's
        # digest checked before it loads), on the GPU Ray gave this replica if any; a
        # container service's containers start labelled with this replica's id, so the
        # server can tell which are orphans (eas/instance/container.py `reap`).
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        host = ContainerHost(self.replica_id, container.owner_of(cache_dir), ray.util.get_node_ip_address())
        self.runtime = ServiceRuntime(spec, cache_dir, device="cuda" if ray.get_gpu_ids() else "cpu", host=host)
        self.creds = Credentials()  # none yet: the instance answers 503 until reconfigure sets them
        app = InstanceApp(self.runtime, f"{self.runtime.spec.name}-{self.replica_id}", self.creds)
        app.on_drain = self._unpublish
        self.server = InstanceServer(app, ray.util.get_node_ip_address())
        self.server.start()
        self._key = KV_PREFIX + f"{self.runtime.spec.name}/{self.replica_id}".encode()
        self._closed = False

    def reconfigure(self, config: dict[str, str]) -> None:
        """Serve calls this with user_config at start and on every secrets change.

        user_config holds only a digest; the secrets themselves are read from Ray's
        internal KV under this service's key (never shown by Serve's config or API).
        """
        import json

        from ray.experimental import internal_kv

        blob = internal_kv._internal_kv_get(secrets_key(self.runtime.spec.name), namespace=KV_NAMESPACE)
        if not blob:
            raise RuntimeError(f"no credentials for service {self.runtime.spec.name} in Ray's KV")
        secrets = json.loads(blob)
        if not secrets.get("token") or not secrets.get("internal_key"):
            # Never serve with an empty secret: an empty internal key would match an empty header.
            raise RuntimeError(f"empty token or internal key for service {self.runtime.spec.name}")
        self.creds.token = secrets["token"]
        self.creds.internal_key = secrets["internal_key"]
        # Published only once credentials are set, so no request arrives before them.
        grpc = self.runtime.container_endpoint if self.runtime.spec.metadata.enable_grpc else None
        internal_kv._internal_kv_put(self._key, endpoint_value((self.server.host, self.server.port), grpc),
                                     namespace=KV_NAMESPACE)

    def _unpublish(self) -> None:
        try:
            from ray.experimental import internal_kv

            internal_kv._internal_kv_del(self._key, namespace=KV_NAMESPACE)
        except Exception:  # the cluster may already be going away
            pass

    def check_health(self) -> None:
        if not self.server.alive:
            raise RuntimeError("instance HTTP server stopped")
        self.runtime.check()  # a container that exited or keeps failing its check: Serve replaces us

    def __del__(self) -> None:
        """Unpublish, let routes refresh and requests in flight finish, then close.

        Serve calls this on graceful shutdown; Python may call it again at collection,
        or on a replica whose constructor failed, hence the guard.
        """
        if getattr(self, "_closed", True) is True or not hasattr(self, "server"):
            return
        self._closed = True
        self._unpublish()
        deadline = time.monotonic() + DRAIN_S + self.runtime.spec.metadata.rpc.keepalive / 1000
        time.sleep(DRAIN_S)
        # gRPC calls relayed by the gateway go straight to the container, unseen here:
        # they get the whole keepalive to finish before the container goes.
        relayed = self.runtime.spec.metadata.enable_grpc and self.runtime.container_endpoint is not None
        while (relayed or self.server.app.in_flight) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.server.stop()
        self.runtime.close()
