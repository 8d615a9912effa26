"""An in-memory backend for the controller: a test double for Ray Serve.

By default it records what the controller asked and reports every deployed app RUNNING
at once, with replicas at made-up addresses (nothing listens there unless a test says
so). Real Ray Serve is exercised end to end in tests/e2e; this lets the control plane
(store, controller, API, routing) be tested in milliseconds.

Two options of `MemoryCluster` bring it closer to Serve for component tests of the
whole server (tests/support/platform.py):

- `script`: per deploy, the `Phase`s the app goes through before it runs (not listed
  yet, DEPLOYING with replicas still STARTING, DEPLOY_FAILED with a reason), each lasting
  some observations or held until `advance`/`release` names it, so the real controller
  turns each step into statuses at a pace the test controls instead of a clock.
- `host_instances`: services with `processor_type: python` get real instances in this
  process (eas/instance: runtime, core and HTTP server on 127.0.0.1), built with the
  token and internal key the controller hands over, as a Serve replica builds one
  (eas/backend/replica.py); the gateway then forwards to them for real.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from eas.control.backend import AppState, Replica
from eas.instance.core import Credentials, InstanceApp
from eas.instance.http import InstanceServer
from eas.instance.runtime import ServiceRuntime
from eas.spec import ServiceSpec

#: A phase status meaning "Serve does not list the app yet" (just accepted).
ABSENT = "ABSENT"


@dataclass(frozen=True)
class Phase:
    """One step of a scripted deploy, as `observe` reports it."""

    status: str = "DEPLOYING"
    """Serve's ApplicationStatus for the step, or ABSENT (the app is not listed)."""
    running: int | None = None
    """Replicas RUNNING in this step (the others are STARTING); None: all of them."""
    message: str = ""
    """The reason Serve gives (DEPLOY_FAILED)."""
    hold: bool = False
    """Stay in this step until `MemoryCluster.advance` or `release` names it."""
    observations: int = 1
    """Otherwise, how many `observe` calls the step lasts."""
    step: str = ""
    """The name `advance` uses."""


#: Given a service name and the spec being deployed, the phases before it runs (None: none).
Script = Callable[[str, ServiceSpec], "list[Phase] | None"]


@dataclass
class _Hosted:
    """A real instance of a service, in this process."""

    replica_id: str
    runtime: ServiceRuntime
    server: InstanceServer
    creds: Credentials

    def stop(self) -> None:
        self.server.stop()
        self.runtime.close()


class MemoryCluster:
    """What runs, shared by the servers (as one Ray cluster is); logs who did what.

    `replica_port`: where made-up replicas point (a port the test keeps closed, so a
    forwarded request is refused at once); default 9000 + index.
    """

    def __init__(self, script: Script | None = None, host_instances: bool = False,
                 replica_port: int | None = None) -> None:
        self.apps: dict[str, AppState] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        """Notified on every deploy, delete, observation and advance."""
        self.script = script
        """Read at each deploy, so a test may set it after the cluster is built."""
        self.host_instances = host_instances
        self.replica_port = replica_port
        self.gpus = 0.0
        """GPUs the cluster reports (`MemoryBackend.gpus`): set one to deploy GPU services."""
        self.logs: dict[tuple[str, str], list[str]] = {}
        """(service, replica id) -> the lines `logs` answers (default: one "started" line)."""
        self._phases: dict[str, list[Phase]] = {}
        self._seen: dict[str, int] = {}
        self._hosted: dict[str, tuple[str, list[_Hosted]]] = {}
        self._host_lock = threading.Lock()

    def advance(self, name: str, step: str) -> bool:
        """Leave the held step `step` of `name`'s deploy if it is the current one.

        Idempotent: naming a step already left does nothing (returns False).
        """
        with self.changed:
            phases = self._phases.get(name)
            if not phases or phases[0].step != step:
                return False
            phases.pop(0)
            self._seen[name] = 0
            self.changed.notify_all()
            return True

    def release(self, name: str, step: str, timeout: float) -> None:
        """Wait (bounded) until the held step `step` of `name`'s deploy is the current one,
        then leave it: for a test that learns of a step before the deploy has begun."""
        def current() -> bool:
            phases = self._phases.get(name)
            return bool(phases) and phases[0].step == step

        with self.changed:
            if not self.changed.wait_for(current, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for step {step!r} of {name}")
            self._phases[name].pop(0)
            self._seen[name] = 0
            self.changed.notify_all()

    def close(self) -> None:
        """Stop every hosted instance."""
        with self._host_lock:
            hosted = [h for _, items in self._hosted.values() for h in items]
            self._hosted.clear()
        for h in hosted:
            h.stop()

    # -- used by MemoryBackend ---------------------------------------------------------

    def _host(self, name: str, spec: ServiceSpec, cache_dir: str, secrets: dict[str, str]) -> list[_Hosted]:
        """Real instances for `spec`: kept (new credentials) when only the count or the
        token changed, as Serve reconfigures them; replaced on a code change."""
        version = spec.code_version()
        count = spec.metadata.instance
        with self._host_lock:
            old_version, items = self._hosted.get(name, ("", []))
            if old_version == version:
                keep, stop = items[:count], items[count:]
            else:
                keep, stop = [], items
            for h in keep:
                h.creds.token, h.creds.internal_key = secrets["token"], secrets["internal_key"]
            try:
                for i in range(len(keep), count):
                    runtime = ServiceRuntime(spec.to_dict(), cache_dir)
                    creds = Credentials(secrets["token"], secrets["internal_key"])
                    server = InstanceServer(InstanceApp(runtime, f"{name}-r{i}", creds), "127.0.0.1")
                    server.start()
                    keep.append(_Hosted(f"r{i}", runtime, server, creds))
            finally:
                self._hosted[name] = (version, keep)
        for h in stop:
            h.stop()
        return keep

    def _unhost(self, name: str) -> None:
        with self._host_lock:
            _, items = self._hosted.pop(name, ("", []))
        for h in items:
            h.stop()

    def _view(self, name: str, app: AppState) -> AppState | None:
        """What `observe` reports for one app: its scripted step, if any (lock held)."""
        phases = self._phases.get(name)
        if not phases:
            return app
        phase = phases[0]
        seen = self._seen[name] = self._seen.get(name, 0) + 1
        if not phase.hold and seen >= phase.observations:
            phases.pop(0)
            self._seen[name] = 0
        if phase.status == ABSENT:
            return None
        running = len(app.replicas) if phase.running is None else phase.running
        replicas = [replace(r, state="RUNNING" if i < running else "STARTING") for i, r in enumerate(app.replicas)]
        return replace(app, status=phase.status, message=phase.message, replicas=replicas)


class MemoryBackend:
    """One server's handle on the cluster (the Backend protocol of eas/control/backend.py)."""

    def __init__(self, cluster: MemoryCluster, who: str) -> None:
        self.cluster, self.who = cluster, who

    def deploy(self, name: str, spec: ServiceSpec, cache_dir: str, secrets: dict[str, str],
               code_dir: str | None = None) -> None:
        cluster = self.cluster
        with cluster.lock:
            cluster.calls.append(("deploy", name, self.who))
        now = time.time()
        status, message = "RUNNING", ""
        if cluster.host_instances and spec.processor_type == "python":
            try:
                hosted = cluster._host(name, spec, cache_dir, secrets)
            except Exception as exc:  # a model that fails to load: Serve's DEPLOY_FAILED
                hosted, status, message = [], "DEPLOY_FAILED", str(exc)
            replicas = [Replica(h.replica_id, f"actor-{name}-{h.replica_id}", "RUNNING", "127.0.0.1", None, now,
                                (h.server.host, h.server.port)) for h in hosted]
        else:
            replicas = [Replica(f"r{i}", f"actor-{name}-{i}", "RUNNING", "127.0.0.1", None, now,
                                ("127.0.0.1", cluster.replica_port or 9000 + i))
                        for i in range(spec.metadata.instance)]
        phases = (cluster.script(name, spec) if cluster.script else None) or []
        with cluster.changed:
            cluster.apps[name] = AppState(status, message, spec.metadata.instance, replicas)
            cluster._phases[name] = list(phases)
            cluster._seen[name] = 0
            cluster.changed.notify_all()

    def delete(self, name: str) -> None:
        with self.cluster.changed:
            self.cluster.calls.append(("delete", name, self.who))
            self.cluster.apps.pop(name, None)
            self.cluster._phases.pop(name, None)
            self.cluster.changed.notify_all()
        self.cluster._unhost(name)

    def observe(self) -> dict[str, AppState]:
        with self.cluster.changed:
            out = {}
            for name, app in self.cluster.apps.items():
                view = self.cluster._view(name, app)
                if view is not None:
                    out[name] = view
            self.cluster.changed.notify_all()
            return out

    def logs(self, name: str, replica_id: str, max_lines: int) -> list[str] | None:
        """The stand-in for an instance's log files: what the test put in `cluster.logs`,
        else one line saying it started; None when no such instance runs."""
        with self.cluster.lock:
            app = self.cluster.apps.get(name)
            if app is None or replica_id not in {r.replica_id for r in app.replicas}:
                return None
            lines = self.cluster.logs.get((name, replica_id), [f"instance {name}-{replica_id} started"])
            return list(lines[-max_lines:])

    def gpus(self) -> float:
        """The cluster's GPUs: `MemoryCluster.gpus` (0 unless a test gives it some)."""
        return self.cluster.gpus

    def restart_instances(self, name: str, replica_ids: list[str], internal_key: str) -> list[str]:
        """Records the restart of the listed instances; returns the ids that are not there."""
        with self.cluster.changed:
            app = self.cluster.apps.get(name)
            known = {r.replica_id for r in (app.replicas if app else [])}
            for rid in replica_ids:
                if rid in known:
                    self.cluster.calls.append(("restart", f"{name}-{rid}", self.who))
            self.cluster.changed.notify_all()
            return [rid for rid in replica_ids if rid not in known]
