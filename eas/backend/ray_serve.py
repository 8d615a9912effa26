"""The Ray Serve backend: start Ray, run services as Serve apps, observe them.

With eas/backend/replica.py (what runs inside each replica) this is the only code
that imports Ray; the controller sees it through eas/control/backend.py.

Each service is its own Serve application (named after the service) with one
deployment whose replicas are the service's instances. The deployment's version is
the spec's code digest, so an instance-count change is a pure scale (no restart) and a
model change is a rolling update, both done by Serve.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import logging
import os
import re
import secrets as token_source
import shutil
import subprocess
import tempfile
import time
from typing import Any

from eas.backend.replica import (
    DRAIN_S,
    KV_NAMESPACE,
    KV_PREFIX,
    Address,
    ServiceReplica,
    parse_endpoint_value,
    secrets_key,
)
from eas.control.backend import AppState, Replica
from eas.instance import container
from eas.protocols.wire import INTERNAL_KEY_HEADER
from eas.sources import archive, fetch, mounts, objectstore
from processors.requirements import runtime_env as code_runtime_env

log = logging.getLogger("eas.ray")

DEPLOYMENT = "ServiceReplica"

# Ray settings that keep it on loopback, quiet and quick to fail a broken model.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_DEDUP_LOGS": "0",
}


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to a cluster, or start a local one kept on loopback with no dashboard."""
    os.environ.update({k: v for k, v in RAY_ENV.items() if k not in os.environ})
    if not address:
        local_auth_token()  # before Ray is imported: it reads the mode once
    import ray
    from ray import serve

    if address:
        ray.init(address=address, log_to_driver=False, namespace="eas")
    else:
        kwargs: dict[str, Any] = dict(
            # "local": always a Ray of our own, never one that `ray start` left on this machine.
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            namespace="eas",
        )
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    # No Serve proxies: our gateway is the ingress and calls the instances' own HTTP servers.
    serve.start(proxy_location="Disabled", logging_config={"enable_access_log": False, "log_level": "WARNING"})


def local_auth_token() -> None:
    """Token auth for the local Ray with a token only this process and its children hold.

    Ray enables token auth for a new local cluster, but keeps the token in
    ~/.ray/auth_token, a file it creates readable by every local user: anyone on the
    machine could then connect to this Ray and run code as the server's user. A token
    of our own in the environment (RAY_AUTH_TOKEN, which Ray reads first and passes to
    its processes) is readable by the server's user only. An operator's own setting
    (RAY_AUTH_MODE, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) is left as it is.
    """
    if any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = token_source.token_hex(32)


def remove_local_session(pid: int) -> None:
    """Delete the files of the local Ray that the eas-server with this pid started.

    Ray names a session directory after the process that started it and never removes
    it; each holds logs and per-service pip environments (hundreds of MB), so test
    and benchmark runs that start many servers would fill the disk. Call it only after
    that server has exited.
    """
    root = os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")
    for session in glob.glob(os.path.join(root, f"session_*_{pid}")):
        shutil.rmtree(session, ignore_errors=True)


def stop_ray() -> None:
    import ray

    ray.shutdown()


class RayBackend:
    """Runs services as Serve applications. Methods return quickly; Serve does the work."""

    def __init__(self, container_owner: str | None = None) -> None:
        """`container_owner`: the label of this server's containers (eas/instance/container.py),
        so those whose instance is gone are removed as replicas are observed."""
        from ray import serve
        from ray.serve.context import _get_global_client

        self._serve = serve
        self._client = _get_global_client()

        self._deployment = serve.deployment(name=DEPLOYMENT)(ServiceReplica)
        self._stale: set[tuple[str, str]] = set()
        self._container_owner = container_owner
        self._stale_containers: set[str] = set()
        self._container_states: dict[str, str] = {}
        self._containers_seen = 0.0

    def deploy(self, name: str, spec: Any, cache_dir: str, secrets: dict[str, str],
               code_dir: str | None = None) -> None:
        """Create or update the service's app; returns once Serve has accepted it.

        `secrets` (token, the service's internal key) are put in Ray's internal KV under
        the service's key, never in the deployment: Serve's config (what `serve status`
        and the Serve API show) carries only a keyed digest of them as user_config, so a
        change still reconfigures running instances (Serve calls `reconfigure`, which
        reads the KV) instead of replacing them. A `requirements.txt`
        in the user's code (`code_dir`, already local) becomes the instances' own pip
        environment (a Ray runtime_env), never the server's.
        """
        meta = spec.metadata
        actor_options = ray_resources(meta, gpu_card_gb() if meta.gpu_memory and not meta.gpu else 0.0)
        # Object-store and mount settings reach instances on every node (local workers inherit them anyway).
        env = {k: os.environ[k] for k in (*objectstore.ENV_VARS, *archive.ENV_VARS, *fetch.ENV_VARS,
                                          *mounts.ENV_VARS, *container.ENV_VARS) if os.environ.get(k)}
        runtime_env: dict[str, Any] = {"env_vars": env} if env else {}
        version = spec.code_version()
        pip_env = code_runtime_env(code_dir)
        if pip_env:
            runtime_env.update(pip_env)
            # The file can change under the same processor_path: make it part of the version.
            digest = hashlib.sha256(json.dumps(pip_env, sort_keys=True).encode()).hexdigest()[:8]
            version = f"{version}-{digest}"
        if runtime_env:
            actor_options["runtime_env"] = runtime_env
        surge, step = rolling(meta)
        deployment = self._deployment.options(
            version=version,
            max_surge_percent=surge,
            max_constructor_retry_count=3,
            num_replicas=meta.instance,
            max_ongoing_requests=meta.concurrency,
            ray_actor_options=actor_options,
            user_config=publish_secrets(name, secrets),
            health_check_period_s=5,
            graceful_shutdown_timeout_s=max(5.0, meta.rpc.keepalive / 1000 * 2) + DRAIN_S,
            _internal=True,
        )
        # Not an options() argument in this Ray version; the config field is public.
        deployment._deployment_config.rolling_update_percentage = step
        app = deployment.bind(spec.to_dict(), cache_dir)
        self._serve._run(app, name=name, route_prefix=None, _blocking=False)

    def gpus(self) -> float:
        """GPUs in the whole Ray cluster (Ray counts them on every node)."""
        import ray

        return float(ray.cluster_resources().get("GPU", 0.0))

    def delete(self, name: str) -> None:
        self._serve.delete(name, _blocking=False)
        from ray.experimental import internal_kv

        try:
            internal_kv._internal_kv_del(secrets_key(name), namespace=KV_NAMESPACE)
        except Exception:  # the next deploy overwrites it anyway
            pass

    def observe(self) -> dict[str, AppState]:
        """One call to the Serve controller for the state of every app."""
        import ray

        details = ray.get(self._client._controller.get_serve_instance_details.remote(), timeout=30)
        endpoints = published_endpoints()
        out: dict[str, AppState] = {}
        for name, app in (details.get("applications") or {}).items():
            dep = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
            status = str(_enum_value(app.get("status")))
            message = dep.get("message") or app.get("message") or ""
            if status == "DEPLOY_FAILED":
                message = failure_reason(message)
            out[name] = AppState(
                status=status,
                message=message,
                target=int(dep.get("target_num_replicas") or 0),
                replicas=[_replica(r, endpoints.get((name, r.get("replica_id", "")))) for r in dep.get("replicas") or []],
                dead_replicas=len(dep.get("recent_dead_replicas") or []),
                version=(dep.get("deployment_config") or {}).get("version"),
            )
        self._forget_dead_endpoints(endpoints, out)
        self._reap_containers(out)
        for app in out.values():
            for replica in app.replicas:
                replica.container = self._container_states.get(replica.replica_id)
        return out

    def _reap_containers(self, apps: dict[str, AppState]) -> None:
        """Remove containers whose replica is gone (killed with SIGKILL: it could not
        remove them), on this node, every few seconds. Like endpoints, a container goes
        only when two looks in a row found no replica of its id, so one whose replica is
        being created (listed a moment later) is never removed."""
        if self._container_owner is None or time.monotonic() - self._containers_seen < CONTAINER_REAP_S:
            return
        self._containers_seen = time.monotonic()
        if container.missing_runtime():
            return
        try:
            rows = container.managed(self._container_owner)
        except container.ContainerError:
            return
        listed = {r.replica_id for app in apps.values() for r in app.replicas}
        # The serving container's (name suffix -0) state, by instance.
        self._container_states = container.describe(rows)
        orphans = {row["id"] for row in rows if row["instance"] not in listed}
        container.remove(sorted(orphans & self._stale_containers))
        self._stale_containers = orphans - self._stale_containers


    def _forget_dead_endpoints(self, endpoints: dict[tuple[str, str], Any],
                               apps: dict[str, AppState]) -> None:
        """Drop the KV entries of instances that died without unpublishing (a lost node).

        They are never routed to (only listed replicas are), but would pile up. An entry
        goes only after two observations without its replica, so one that published
        between the two reads of a single observation is never removed.
        """
        from ray.experimental import internal_kv

        listed = {(name, r.replica_id) for name, app in apps.items() for r in app.replicas}
        orphans = set(endpoints) - listed
        for service, replica_id in orphans & self._stale:
            try:
                internal_kv._internal_kv_del(KV_PREFIX + f"{service}/{replica_id}".encode(), namespace=KV_NAMESPACE)
            except Exception:
                pass
        self._stale = orphans - self._stale

    def restart_instances(self, name: str, replica_ids: list[str], internal_key: str) -> list[str]:
        """Drain the named replicas, then stop them; Serve starts replacements.

        Draining takes an instance out of discovery and lets requests in flight finish,
        so a restart under load fails no request when other instances can take it.
        Returns the ids not found.
        """
        import httpx
        import ray

        state = self.observe().get(name)
        by_id = {r.replica_id: r for r in (state.replicas if state else [])}
        missing = [rid for rid in replica_ids if rid not in by_id]
        chosen = [by_id[rid] for rid in replica_ids if rid in by_id]
        headers = {INTERNAL_KEY_HEADER: internal_key}
        with httpx.Client(timeout=2) as http:
            for rep in chosen:
                if rep.endpoint:
                    try:
                        http.post(f"http://{rep.endpoint[0]}:{rep.endpoint[1]}/drain", headers=headers)
                    except httpx.HTTPError:
                        pass
            time.sleep(DRAIN_S)
            deadline = time.monotonic() + 30
            for rep in chosen:
                while rep.endpoint and time.monotonic() < deadline:
                    try:
                        url = f"http://{rep.endpoint[0]}:{rep.endpoint[1]}/healthz"
                        if http.get(url).json().get("in_flight", 0) == 0:
                            break
                    except httpx.HTTPError:
                        break
                    time.sleep(0.05)
                try:
                    ray.kill(ray.get_actor(rep.actor_name, namespace="serve"), no_restart=True)
                except ValueError:
                    missing.append(rep.replica_id)
        return missing


    def logs(self, name: str, replica_id: str, max_lines: int) -> list[str] | None:
        """The replica's own log lines: what its worker process wrote to stdout, then to
        stderr (Ray's `worker-*-<pid>.out` / `.err` in the node's session logs). Read in
        place on this node; on another node by a tiny task pinned there (no dashboard
        needed). None when the replica is not listed."""
        import ray

        state = self.observe().get(name)
        replica = next((r for r in (state.replicas if state else []) if r.replica_id == replica_id), None)
        if replica is None:
            return None
        if replica.pid is None:
            return []
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        here = ray._private.worker.global_worker.node.node_ip_address
        if len(nodes) <= 1 or replica.node_ip in (here, "127.0.0.1"):
            lines = worker_log_lines(replica.pid, max_lines)
            if lines is not None:
                return lines
        node_id = next((n["NodeID"] for n in nodes if n.get("NodeManagerAddress") == replica.node_ip), None)
        if node_id is None:
            return []
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        reader = ray.remote(num_cpus=0, max_retries=0,
                            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))(worker_log_lines)
        try:
            return ray.get(reader.remote(replica.pid, max_lines), timeout=LOG_READ_TIMEOUT_S) or []
        except Exception as exc:  # a node going away: no lines, said in the server's log
            log.warning("could not read the logs of %s-%s on %s: %s", name, replica_id, replica.node_ip, exc)
            return []


#: Seconds between two looks for containers whose replica is gone.
CONTAINER_REAP_S = 5.0
#: How long a log read on another node may take.
LOG_READ_TIMEOUT_S = 20
#: Bytes read from the end of each log file (the tail a page of lines comes from).
LOG_TAIL_BYTES = 4 * 1024 * 1024


def worker_log_lines(pid: int, max_lines: int) -> list[str] | None:
    """The last lines of the stdout and stderr files of Ray worker `pid` on this node,
    without Ray's own markers (`:job_id:`, `:actor_name:`); None when it has no files here."""
    import ray

    logs_dir = ray._private.worker.global_worker.node.get_logs_dir_path()
    found = False
    lines: list[str] = []
    for suffix in ("out", "err"):
        # A pid the OS reused on a long-lived node: the newest file is the live worker's.
        paths = glob.glob(os.path.join(logs_dir, f"worker-*-{pid}.{suffix}"))
        if not paths:
            continue
        found = True
        path = max(paths, key=os.path.getmtime)
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
        own = [ln for ln in text.splitlines() if not ln.startswith((":job_id:", ":actor_name:", ":task_name:"))]
        lines += own[-max_lines:]
    return lines if found else None


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def _replica(r: dict[str, Any], published: tuple[Address, Address | None] | None) -> Replica:
    return Replica(
        endpoint=published[0] if published else None,
        grpc=published[1] if published else None,
        replica_id=r.get("replica_id", ""),
        actor_name=r.get("actor_name", ""),
        state=str(_enum_value(r.get("state"))),
        node_ip=r.get("node_ip") or "",
        pid=r.get("pid"),
        start_time=float(r.get("start_time_s") or time.time()),
    )


_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def failure_reason(message: str) -> str:
    """The user-facing reason inside Serve's deploy failure text (which ends in a traceback)."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _ERROR_LINE.match(line)
        if m:
            kind, text = m.groups()
            return text if kind == "ModelLoadError" else f"{kind}: {text}"
    return lines[-1] if lines else "deployment failed"


#: Memory of one GPU card in the cluster, GB: what `gpu_memory` is a share of (env
#: EAS_GPU_MEMORY_GB; else what nvidia-smi says on the server's node; else this).
DEFAULT_GPU_CARD_GB = 16.0


def ray_resources(meta: Any, card_gb: float = DEFAULT_GPU_CARD_GB) -> dict[str, Any]:
    """EAS `metadata` resources as Ray actor options.

    `cpu` is reserved as `num_cpus`, except under `qos: BestEffort` (EAS's CPU-sharing
    mode, where cpu is a cap and instances are placed by GPU memory alone): nothing is
    reserved. `memory` (MB) as bytes. `gpu` whole cards as `num_gpus`; `gpu_memory`
    (GB, with gpu 0: EAS's shared-card scheduling) as the fraction of one `card_gb`
    card, so Ray packs several such instances on one GPU. `resource` (EAS's resource
    group) as a Ray custom resource: instances go only to nodes that advertise it (a
    label; the tiny amount does not limit how many fit).
    """
    options: dict[str, Any] = {"num_cpus": 0 if meta.qos == "BestEffort" else meta.cpu}
    if meta.memory:
        options["memory"] = meta.memory * 1024 * 1024
    if meta.gpu:
        options["num_gpus"] = meta.gpu
    elif meta.gpu_memory:
        options["num_gpus"] = min(1.0, round(meta.gpu_memory / max(card_gb, 1e-9), 4))
    if meta.resource:
        options["resources"] = {meta.resource: 0.001}
    return options


def gpu_card_gb() -> float:
    """The memory of one GPU card (see DEFAULT_GPU_CARD_GB), read once per call site."""
    configured = os.environ.get("EAS_GPU_MEMORY_GB")
    if configured:
        try:
            return float(configured)
        except ValueError:
            log.warning("EAS_GPU_MEMORY_GB=%r is not a number; using %g", configured, DEFAULT_GPU_CARD_GB)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return min(float(line) for line in out.split()) / 1024  # MiB per card; the smallest card
    except (OSError, subprocess.SubprocessError, ValueError):
        return DEFAULT_GPU_CARD_GB


def rolling(meta: Any) -> tuple[int, float]:
    """EAS `rolling_strategy` as Serve's (max_surge_percent, rolling_update_percentage).

    New instances start before old ones stop (surge defaults to 100 %), so a rollout
    never lowers capacity; `max_unavailable` (a count or "N%") sets the step size.
    """
    n = max(1, meta.instance)

    def percent(value: Any, default: float) -> float:
        if value is None:
            return default
        text = str(value).strip()
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text) / n

    surge = int(round(min(1.0, max(0.0, percent(meta.rolling_strategy.max_surge, 1.0))) * 100))
    step = min(1.0, max(1 / n, percent(meta.rolling_strategy.max_unavailable, 1 / n)))
    return surge, step


def publish_secrets(name: str, secrets: dict[str, str]) -> dict[str, str]:
    """Put a service's secrets in Ray's internal KV; return what Serve may show instead.

    The digest is keyed by the service's internal key, so it tells nothing about the
    token (not even for a short one chosen by hand) yet changes whenever a secret does.
    """
    from ray.experimental import internal_kv

    blob = json.dumps(secrets, sort_keys=True).encode()
    internal_kv._internal_kv_put(secrets_key(name), blob, overwrite=True, namespace=KV_NAMESPACE)
    digest = hmac.new(secrets["internal_key"].encode(), blob, hashlib.sha256).hexdigest()[:16]
    return {"service": name, "secrets_digest": digest}


def published_endpoints() -> dict[tuple[str, str], tuple[Address, Address | None]]:
    """(service, replica id) -> (HTTP (host, port), container gRPC (host, port) or None)
    for every instance that published one."""
    from ray.experimental import internal_kv

    out: dict[tuple[str, str], tuple[Address, Address | None]] = {}
    for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=KV_NAMESPACE):
        value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        if not value:
            continue
        service, _, replica_id = key[len(KV_PREFIX):].decode().rpartition("/")
        out[(service, replica_id)] = parse_endpoint_value(value)
    return out
