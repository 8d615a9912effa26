"""The controller: a reconcile loop from the store's desired state onto the backend.

Every second (and at once after a change) it reads every service from the store,
asks the backend what is running, acts on the difference and writes the observed
status back. It keeps no state that cannot be rebuilt: after a restart the first
pass redeploys whatever the store says should run, which is how `kill -9` of the
server or of Ray loses nothing.

Each concern has its own small part, as in Ray Serve's controller: routes and
entries are built by routing.py (pure), instance counts by scaling.py (whose scraper
reads instances on its own thread), and leadership by leader.py: with a leader lease
only the holder acts; the others follow, rebuilding their routes from the store and
what Ray runs, and write nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx

import processors
from eas import sources, spec as specs
from eas.sources import mounts
from eas.control import gpu, routing
from eas.instance import container
from eas.control.backend import AppState, Backend
from eas.control.keys import service_key
from eas.control.leader import LeaderLease
from eas.control.autoscale import Scaler
from eas.control.queues import Queues
from eas.control.scaling import Scaling, Scraper
from eas.control.store import DELETED, RUNNING, STOPPED, Fence, Fenced, ServiceRecord, Status, Store
from eas.gateway.metrics import InstanceStats, ServiceCounts
from eas.gateway.route_table import Endpoint, RouteTable
from eas.ratelog import BurstLog

log = logging.getLogger("eas.controller")
#: Tracebacks of failures that repeat every pass: the first in full, then counted (eas/ratelog.py).
failures = BurstLog(log)

#: How often the model cache is garbage-collected, and how long an entry no current
#: service version uses is kept after its last use (env EAS_CACHE_GC_INTERVAL_S, EAS_CACHE_MAX_AGE_S).
CACHE_GC_INTERVAL_S = float(os.environ.get("EAS_CACHE_GC_INTERVAL_S", "600"))
CACHE_MAX_AGE_S = float(os.environ.get("EAS_CACHE_MAX_AGE_S", str(24 * 3600)))
#: How long the health check of an instance taken out of rotation may take.
RECHECK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class AppliedVersion:
    """What was last handed to the backend for a service: code digest, instances, token."""

    code: str
    instances: int
    token: str


@dataclass(frozen=True)
class ServiceView:
    """What the controller knows of one service beyond the store (for `desc` and `w`)."""

    app: AppState | None
    desired: int


class Controller:
    def __init__(self, store: Store, backend: Backend, routes: RouteTable, cache_dir: str,
                 internal_key: str, interval_s: float = 1.0, leader: LeaderLease | None = None,
                 cache_gc_interval_s: float = CACHE_GC_INTERVAL_S, cache_max_age_s: float = CACHE_MAX_AGE_S) -> None:
        self.store = store
        self.allow_cpu_fallback = False
        """eas-server --allow-cpu-fallback: a service asking for a GPU on a cluster without one
        runs on CPU (with an event saying so) instead of failing (eas/control/gpu.py)."""
        self.leader = leader
        """None to always act (one server, tests)."""
        self.leading = leader is None
        self.backend = backend
        self.routes = routes
        self.cache_dir = cache_dir
        self.internal_key = internal_key
        """The master key: each service's instances get only `service_key(master, name)`."""
        self.interval_s = interval_s
        self.cache_gc_interval_s = cache_gc_interval_s
        self.cache_max_age_s = cache_max_age_s
        self._next_gc = time.monotonic() + min(60.0, cache_gc_interval_s)
        self._gc: Future[list[str]] | None = None
        self._demanded: set[str] = set()
        """Services a request found asleep on this server's gateway, not yet in the store."""
        self._applied: dict[str, AppliedVersion] = {}
        self._failed: dict[str, AppliedVersion] = {}
        self._fail_reasons: dict[str, str] = {}
        """Why each `_failed` version failed: the pass writes it as the service's status."""
        self._preparing: dict[str, Future[None]] = {}
        self._deleting: set[str] = set()
        self._ever_running: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="eas-deploy")
        self._rechecks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eas-recheck")
        self._rechecking: set[tuple[str, int]] = set()
        """Instances taken out of rotation whose health check is under way."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_observed: dict[str, AppState] = {}
        self.counts: dict[str, ServiceCounts] = {}
        """Instances per service as of the last pass (what /metrics reports; no store read)."""
        self.scaling = Scaling(routes)
        self.queues = Queues(store)
        """The queues of Async services (their backlog scales them: `queue[backlog]`)."""
        self.scraper = Scraper(routes, self.scaling, interval_s)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.scraper.start()
        self._thread = threading.Thread(target=self._loop, name="eas-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.scraper.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._rechecks.shutdown(wait=False, cancel_futures=True)
        if self.leader is not None:
            self.leader.release()

    def wake(self) -> None:
        """Reconcile now instead of at the next tick (called after every API change)."""
        self._wake.set()

    def retry(self, name: str) -> None:
        """Forget a recorded failure so the next pass deploys again (start, modify)."""
        with self._lock:
            self._failed.pop(name, None)
            self._fail_reasons.pop(name, None)
            self._applied.pop(name, None)
        self.wake()

    def demand(self, name: str) -> None:
        """A request arrived for a service with no instance (the gateway calls this, on its
        event loop: no store call here). The next pass records it in the store, so the
        leader wakes the service whichever server's gateway the request reached."""
        self.scaling.demand(name)
        self._demanded.add(name)
        self.wake()

    def service_key(self, name: str) -> str:
        """The internal key of one service's instances (what its route presents)."""
        return service_key(self.internal_key, name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:
                failures.exception("reconcile", "reconcile pass failed; retrying")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    # -- what the API and metrics read ----------------------------------------------

    @property
    def scaler(self) -> Scaler:
        return self.scaling.scaler

    @property
    def instance_stats(self) -> dict[str, InstanceStats]:
        return self.scraper.instance_stats

    def view(self, rec: ServiceRecord) -> ServiceView:
        default = rec.spec.get("metadata", {}).get("instance", 0)
        desired = self.scaling.desired_count(rec.name, default) if rec.desired == RUNNING else 0
        return ServiceView(self.last_observed.get(rec.name), desired)

    def service_counts(self) -> dict[str, ServiceCounts]:
        return self.counts

    def restart_instances(self, name: str, replica_ids: list[str]) -> list[str]:
        """Drain and restart instances (blocks while they drain); returns the ids not found."""
        missing = self.backend.restart_instances(name, replica_ids, self.service_key(name))
        self.wake()
        return missing

    # -- one pass -----------------------------------------------------------------

    def reconcile(self) -> None:
        self._elect()
        try:
            self._exchange_demand()
        except Fenced as exc:
            self._deposed(exc)
        observed = self.backend.observe()
        self.last_observed = observed
        records = self.store.list()
        if any(specs.is_async(r.spec) for r in records):
            self.scaling.backlogs = self.queues.backlogs()
        for rec in records:
            if not self.leading:
                try:
                    self._follow_one(rec, observed.get(rec.name))
                except Exception:
                    failures.exception(f"follow:{rec.name}", "following %s failed", rec.name)
                continue
            try:
                self._reconcile_one(rec, observed.get(rec.name))
            except Fenced as exc:
                self._deposed(exc)
            except Exception as exc:
                failures.exception(f"reconcile:{rec.name}", "reconciling %s failed", rec.name)
                try:
                    self._write(self.store.set_status, rec.name, Status.FAILED, f"internal error: {exc}")
                except Fenced as fenced:
                    self._deposed(fenced)
        known = {r.name for r in records}
        for name in list(self.routes.names()):
            if name not in known:
                self.routes.drop(name)
        entries, orphans = routing.entries(records, self.store.traffic().values(),
                                           {name: app.running for name, app in observed.items()})
        if self.leading:
            try:
                for name in orphans:
                    self._write(self.store.delete_traffic, name, name, "removed: no service left behind it")
            except Fenced as exc:
                self._deposed(exc)
        self.routes.set_entries(entries)
        self.counts = _counts(records, observed, self.scaling.backlogs)
        self._collect_cache_garbage(records)
        self._recheck_down()

    # -- instances the gateway took out of rotation ---------------------------------------

    def _recheck_down(self) -> None:
        """An instance the gateway found dead stays out of its rotation (and of DIRECT
        discovery) until it answers a health check from here: every pass, leader or
        follower (each server's gateway has its own rotation), off this thread. One that
        is gone for good is forgotten once the backend no longer lists it."""
        for down in self.routes.down():
            key = (down.endpoint.host, down.endpoint.port)
            if key not in self._rechecking:
                self._rechecking.add(key)
                self._rechecks.submit(self._recheck, down.endpoint)

    def _recheck(self, endpoint: Endpoint) -> None:
        try:
            healthy = httpx.get(f"{endpoint.url}/healthz", timeout=RECHECK_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            healthy = False
        finally:
            self._rechecking.discard((endpoint.host, endpoint.port))
        if healthy:
            log.info("instance %s answers its health check again: back in rotation", endpoint.instance)
            self.routes.restore(endpoint)

    # -- leadership: who acts, and writes fenced by the lease term ------------------------

    @property
    def _fence(self) -> Fence | None:
        """What the store checks before a controller write: this server's lease and term."""
        if self.leader is None:
            return None
        return Fence(self.leader.name, self.leader.holder, self.leader.term)

    def _write(self, method, *args: object) -> object:  # noqa: ANN001
        """A store write of the controller's, fenced by the lease term when there is a leader."""
        fence = self._fence
        return method(*args) if fence is None else method(*args, fence=fence)

    def _acting(self, in_pass: bool = True) -> bool:
        """Whether this server may act on the backend now: it leads, its lease still covers
        now on its own clock, and the store confirms its term is current (a leader paused
        past its lease, or whose clock is wrong, stops before it acts again). In a pass, a
        refusal makes this server follow at once; a deploy task only gives up."""
        if self.leader is None:
            return True
        if not (self.leading and self.leader.leading):
            return False
        fence = self._fence
        assert fence is not None
        try:
            self.store.check_fence(fence)
        except Fenced as exc:
            if in_pass:
                self._deposed(exc)
            return False
        return True

    def _deposed(self, exc: Fenced) -> None:
        """The store refused a write: another server holds the lease now. Follow at once."""
        if self.leader is not None:
            log.warning("%s; following from now on", exc)
            self.leader.step_down()
        with self._lock:
            self._applied.clear()
            self._failed.clear()
            self._fail_reasons.clear()
        self._deleting.clear()
        self.leading = False

    def _exchange_demand(self) -> None:
        """Demand travels through the store: a follower writes what its gateway saw, the
        leader takes what any server wrote (and what its own gateway saw) and wakes those."""
        if self.leader is None:
            self._demanded.clear()  # one server: the gateway already told scaling directly
            return
        seen, self._demanded = self._demanded, set()
        if not self.leading:
            try:
                self.store.record_demand(sorted(seen))
            except Exception:
                self._demanded |= seen  # the store is away: keep it for the next pass
                raise
            return
        for name in self._write(self.store.consume_demand):  # type: ignore[union-attr]
            self.scaling.demand(name)

    def _collect_cache_garbage(self, records: list[ServiceRecord]) -> None:
        """Now and then, on the deploy pool: remove model cache entries that no current
        service version uses and that were last used longer ago than the bound."""
        if time.monotonic() < self._next_gc or (self._gc is not None and not self._gc.done()):
            return
        self._next_gc = time.monotonic() + self.cache_gc_interval_s
        keep = [path for rec in records for path in (rec.spec.get("model_path"), rec.spec.get("processor_path"),
                                                     rec.spec.get("warm_up_data_path")) if path]
        keep += [source for rec in records for source in mounts.sources(rec.spec.get("storage"))]

        def collect() -> list[str]:
            removed = sources.collect_garbage(self.cache_dir, keep, self.cache_max_age_s)
            if removed:
                log.info("model cache: removed %d unused entries", len(removed))
            return [str(p) for p in removed]

        try:
            self._gc = self._pool.submit(collect)
        except RuntimeError:  # stopping
            pass

    def _elect(self) -> None:
        """Renew or take the lease; on a change of role start from the store afresh.

        A new leader forgets what it applied before, so its first pass redeploys every
        running service (the same versions: Serve changes nothing that already runs).
        """
        if self.leader is None:
            return
        leading = self.leader.check()
        if leading != self.leading:
            with self._lock:
                self._applied.clear()
                self._failed.clear()
                self._fail_reasons.clear()
            self._deleting.clear()
            self.leading = leading

    def _follow_one(self, rec: ServiceRecord, app: AppState | None) -> None:
        """A follower's pass over one service: its route from what runs, no writes."""
        if rec.desired != RUNNING:
            self.routes.set(routing.closed_route(rec))
            return
        spec = specs.ServiceSpec.model_validate(rec.spec)
        reason = "service failed: " + rec.message if rec.status == Status.FAILED else "no instance is ready yet"
        self.routes.set(self._route(rec, spec, app, reason))

    def _route(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None, reason: str):  # noqa: ANN202
        # A follower runs no scaling of its own: the store says whether the service sleeps,
        # so its gateway too holds the request and asks for a wake (demand, via the store).
        asleep = rec.name in self.scaling.sleeping or (not self.leading and rec.status == Status.SLEEPING)
        return routing.service_route(rec, spec, app, reason, asleep=asleep, internal_key=self.service_key(rec.name))

    def _scaled_spec(self, rec: ServiceRecord, app: AppState | None) -> specs.ServiceSpec:
        spec, event = self.scaling.scaled_spec(rec.name, specs.ServiceSpec.model_validate(rec.spec), app)
        if event is not None:
            self._write(self.store.add_event, rec.name, "Scaled", event)
        return spec

    def _reconcile_one(self, rec: ServiceRecord, app: AppState | None) -> None:
        name = rec.name
        if rec.desired == DELETED:
            self._take_down(rec, app, Status.DELETING)
            if app is None:
                self._write(self.store.remove, name)
                self.routes.drop(name)
                self._forget(name)
            return
        if rec.desired == STOPPED:
            self._take_down(rec, app, Status.STOPPING)
            if app is None:
                self._write(self.store.set_status, name, Status.STOPPED, "")
                self._forget(name)
            return
        spec = self._scaled_spec(rec, app)
        if spec.metadata.instance == 0:
            self._release_all_instances(rec, spec, app)
            return
        self._deleting.discard(name)
        want = AppliedVersion(spec.code_version(), spec.metadata.instance, rec.token)
        with self._lock:
            failed = self._failed.get(name) == want
            reason = self._fail_reasons.get(name, rec.message)
            preparing = name in self._preparing
            applied = self._applied.get(name)
        if failed:
            # Written by the pass, not the deploy task: a pass that began before the task
            # failed would overwrite it (with Creating) and no later pass would fix it.
            if rec.status != Status.FAILED or rec.message != reason:
                self._write(self.store.set_status, name, Status.FAILED, reason)
            self.routes.set(self._route(rec, spec, app, "service failed: " + reason))
            return
        if applied != want and not preparing:
            self._submit_deploy(rec, spec, want)
        self._observe(rec, spec, app, preparing or applied != want)

    def _release_all_instances(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None) -> None:
        """No instance wanted (asleep, or metadata.instance 0): release the app entirely.

        Serve wants at least one replica per app, so zero is "no app"; waking deploys
        again from the store like any first deploy.
        """
        name = rec.name
        if app is not None and name not in self._deleting and self._acting():
            self.backend.delete(name)
            self._deleting.add(name)
        elif app is None:
            self._deleting.discard(name)
        with self._lock:
            self._applied.pop(name, None)
        asleep = name in self.scaling.sleeping
        if app is None:  # "Sleeping" only once every instance is gone
            self._write(self.store.set_status, name, Status.SLEEPING if asleep else Status.RUNNING,
                        "" if asleep else "0 instances requested")
        reason = "service is waking up" if asleep else "service has 0 instances (set metadata.instance)"
        self.routes.set(self._route(rec, spec, None, reason))

    def _take_down(self, rec: ServiceRecord, app: AppState | None, status: Status) -> None:
        self.routes.set(routing.closed_route(rec))
        if app is not None:
            if rec.name not in self._deleting and self._acting():
                self.backend.delete(rec.name)
                self._deleting.add(rec.name)
            self._write(self.store.set_status, rec.name, status, "")

    def _forget(self, name: str) -> None:
        self._deleting.discard(name)
        self._ever_running.discard(name)
        self.scaling.forget(name)
        with self._lock:
            self._applied.pop(name, None)
            self._failed.pop(name, None)
            self._fail_reasons.pop(name, None)

    def _submit_deploy(self, rec: ServiceRecord, spec: specs.ServiceSpec, want: AppliedVersion) -> None:
        def task() -> None:
            try:
                # Fetch here first: a bad path, archive or storage mount fails in a second,
                # with a clear reason, instead of after several instance start attempts.
                mounted = mounts.prepare(spec.to_dict().get("storage"), self.cache_dir, spec.oss_endpoint,
                                         shm_gb=spec.metadata.shm_size, scratch=False)
                sources.resolve(mounted.local(spec.model_path), f"{self.cache_dir}/models", spec.oss_endpoint,
                                sha256=spec.model_sha256)
                code_dir = sources.resolve(mounted.local(spec.processor_path), f"{self.cache_dir}/code",
                                           spec.oss_endpoint)
                # A framework that is not installed fails now with its pip command (a ValueError).
                processors.check_framework(spec.processor, spec.processor_type, code_dir=code_dir)
                # A GPU asked for where there is none fails now (or runs on CPU when allowed).
                placed, note = gpu.place(spec, self.backend.gpus, self.allow_cpu_fallback)
                # Images need a container runtime on this node: without one, fail now saying what to install.
                missing = container.missing_runtime() if spec.containers else None
                if missing:
                    raise ValueError(missing)
                if not self._acting(in_pass=False):  # deposed while fetching: the new leader deploys
                    return
                if note:
                    self._write(self.store.add_event, rec.name, "Placement", note)
                self.backend.deploy(rec.name, placed, self.cache_dir,
                                    {"token": rec.token, "internal_key": self.service_key(rec.name)}, code_dir)
            except Exception as exc:
                known = (sources.ModelSourceError, ValueError)  # ValueError: bad requirements.txt
                reason = str(exc) if isinstance(exc, known) else f"deploy failed: {exc}"
                with self._lock:
                    self._failed[rec.name] = want
                    self._fail_reasons[rec.name] = reason
                log.warning("service %s failed: %s", rec.name, sources.redact_text(reason))
            else:
                with self._lock:
                    self._applied[rec.name] = want
            finally:
                with self._lock:
                    self._preparing.pop(rec.name, None)
                self.wake()

        with self._lock:
            self._preparing[rec.name] = self._pool.submit(task)
        if rec.status in (Status.FAILED, Status.STOPPED):
            status = Status.CREATING if rec.status == Status.STOPPED else Status.UPDATING
            self._write(self.store.set_status, rec.name, status, "")

    def _observe(self, rec: ServiceRecord, spec: specs.ServiceSpec, app: AppState | None, changing: bool) -> None:
        name = rec.name
        if app is None:
            status = Status.CREATING if name not in self._ever_running else Status.UPDATING
            self._write(self.store.set_status, name, status, "")
            self.routes.set(self._route(rec, spec, None, "service is deploying"))
            return
        if app.status == "DEPLOY_FAILED" and not changing:
            reason = app.message
            with self._lock:
                self._failed[name] = AppliedVersion(spec.code_version(), spec.metadata.instance, rec.token)
                self._fail_reasons[name] = reason
            self._write(self.store.set_status, name, Status.FAILED, reason)
            self.routes.set(self._route(rec, spec, app, "service failed: " + reason))
            return
        if name in self.scaling.sleeping and not changing and app.running == 0:
            self._write(self.store.set_status, name, Status.SLEEPING, "")
        elif app.status == "RUNNING" and not changing and app.running >= spec.metadata.instance:
            self._ever_running.add(name)
            self._write(self.store.set_status, name, Status.RUNNING, "")
        else:
            running_before = name in self._ever_running or rec.status == Status.RUNNING
            self._write(self.store.set_status, name, Status.UPDATING if running_before else Status.WAITING, "")
        self.routes.set(self._route(rec, spec, app, "no instance is ready yet"))


def _counts(records: list[ServiceRecord], observed: dict[str, AppState],
            backlogs: dict[str, int] | None = None) -> dict[str, ServiceCounts]:
    out = {}
    for rec in records:
        app = observed.get(rec.name)
        desired = rec.spec.get("metadata", {}).get("instance", 0) if rec.desired == RUNNING else 0
        backlog = (backlogs or {}).get(rec.name, 0) if specs.is_async(rec.spec) else None
        out[rec.name] = ServiceCounts(desired, len(app.replicas) if app else 0, app.running if app else 0, backlog)
    return out
