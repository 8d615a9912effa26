"""`eas-server`: the control plane and the predict gateway in one process.

Start-up order matters: the store first (the truth), then Ray, then the controller
(which redeploys whatever the store says should run), then the HTTP port. The port
is checked before Ray starts so a taken port fails in a second, not after Ray's boot.

With `--admin-port` the management API (and the console) listens apart, on loopback
by default, and the predict port answers 404 for it; without, one port serves both.
Every listener runs within `ListenerLimits` (eas/protocols/http.py, docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from eas import __version__
from eas.api.accesskeys import AccessKeysApi
from eas.api.backflow import BackflowApi
from eas.api.jobs import JobsApi
from eas.api.base import ApiContext
from eas.api.services import ServicesApi
from eas.api.traffic import TrafficApi
from eas.client import config
from eas.console import Console
from eas.control.backend import Backend
from eas.control.controller import Controller
from eas.control.leader import LeaderLease, server_identity
from eas.control.backflow import BackflowWriter
from eas.control.jobs import JobRunner
from eas.control.store import Store, redact
from eas.gateway.core import Gateway
from eas.gateway.grpc_server import GrpcGateway
from eas.gateway.http import EasHttp
from eas.gateway.oip_http import OipHttp
from eas.gateway.route_table import RouteTable
from eas.instance import container
from eas.protocols.http import ListenerLimits, PredictFastPath, uvicorn_config
from eas.queue.dispatcher import Dispatcher
from eas.queue.http import QueueFront
from eas.queue.service import QueueService

log = logging.getLogger("eas.server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="eas-server",
        description="Serve models behind an EAS-compatible endpoint, managed with eascmd.",
        epilog="Example: eas-server --data-dir ./eas-data --port 8080, then "
        "eascmd -c ./eas-data/eascmd.conf ls",
    )
    p.add_argument("--data-dir", default=os.environ.get("EAS_DATA_DIR", "./eas-data"),
                   help="state (SQLite store), model cache and eascmd.conf (default ./eas-data)")
    p.add_argument("--store", default=os.environ.get("EAS_STORE"),
                   help="the state database: postgresql://user:pass@host:port/db (needs the "
                   "postgres extra) or a SQLite file path (default <data-dir>/eas.db; env EAS_STORE)")
    p.add_argument("--lease-ttl", type=float, default=float(os.environ.get("EAS_LEASE_TTL_S", "10")),
                   help="seconds the controller's leader lease lasts; a follower takes over "
                   "this long after the leader dies (default 10; env EAS_LEASE_TTL_S)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080,
                   help="port for the gateway, and for the management API unless --admin-port (default 8080)")
    p.add_argument("--admin-port", type=int, default=None,
                   help="serve the management API (/api/v2/..., the console) only on this port, apart "
                   "from predict traffic; the predict port then answers 404 for it, and eascmd.conf "
                   "points here (default: none, one port serves both)")
    p.add_argument("--admin-host", default="127.0.0.1",
                   help="address of the --admin-port listener (default 127.0.0.1: this machine only)")
    limits = ListenerLimits()
    p.add_argument("--limit-concurrency", type=int, default=limits.concurrency,
                   help="open connections plus requests in progress per HTTP listener, and gRPC calls at "
                   f"once; beyond, 503 (gRPC: RESOURCE_EXHAUSTED); 0 is no limit (default {limits.concurrency})")
    p.add_argument("--keep-alive", type=float, default=limits.keep_alive_s, metavar="SECONDS",
                   help=f"an idle keep-alive connection closes after this long (default {limits.keep_alive_s:g})")
    p.add_argument("--header-timeout", type=float, default=limits.head_timeout_s, metavar="SECONDS",
                   help="a request's line and headers must arrive within this long of the connection (or "
                   "of their first byte): else 408 and the connection closes; also the gRPC handshake "
                   f"time (default {limits.head_timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=limits.body_timeout_s, metavar="SECONDS",
                   help=f"a request body that stops arriving for this long: 408, connection closed "
                   f"(default {limits.body_timeout_s:g})")
    p.add_argument("--grpc-port", type=int, default=8081,
                   help="gRPC port on the same host: KServe v2 inference.GRPCInferenceService and "
                   "eas.Predict (default 8081; 0 turns gRPC off)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster; without it a local Ray is started on loopback")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="logical CPUs of the embedded Ray (default 4 per core, so small "
                   "services can share a laptop; on a cluster Ray's own count is used)")
    p.add_argument("--container-runtime", choices=container.RUNTIMES,
                   default=os.environ.get(container.RUNTIME_ENV) or "podman",
                   help="what runs container services' images (default podman; docker when configured)")
    p.add_argument("--region", default="local", help="region name shown by eascmd (default local)")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="run services that ask for a GPU on CPU when the cluster has none (an event says so) "
                        "instead of failing them")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--access-log", default=None, metavar="PATH",
                   help="write one JSON line per predict request (request id, service, status, ms) "
                   "to PATH, or '-' for stderr; off by default, it costs throughput")
    return p.parse_args(argv)


def enable_access_log(target: str) -> None:
    """Structured access log: JSON lines, one per predict request, with its request id."""
    handler: logging.Handler = logging.StreamHandler() if target == "-" else logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("eas.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)


def internal_key(store: Store) -> str:
    """The master key each service's internal key is derived from (eas/control/keys.py);
    kept so instances outlive a restart. It never leaves the control plane: instances
    get only their own service's key, and the gateway presents the route's.

    Servers sharing a store share it (the first one to start writes it).
    """
    return store.setting("internal_key") or store.init_setting("internal_key", secrets.token_urlsafe(32))


def admin_credentials(store: Store) -> tuple[str, str]:
    """Env overrides, else the pair generated on first start and kept in the store."""
    access_id = os.environ.get("EAS_ACCESS_ID") or store.init_setting("access_id", f"eas-admin-{secrets.token_hex(4)}")
    access_key = os.environ.get("EAS_ACCESS_KEY") or store.init_setting("access_key", secrets.token_urlsafe(24))
    return access_id, access_key


def lock_data_dir(data_dir: Path) -> int:
    """One server per data dir: its server id (the lease holder name) must be its own.

    The lock dies with the process (even on kill -9), so a restart takes it at once.
    """
    fd = os.open(data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SystemExit(f"eas-server: another eas-server uses {data_dir}; give each server its own "
                         "--data-dir (servers share state through --store postgresql://...)") from None
    return fd


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"eas-server: cannot listen on {host}:{port} ({exc.strerror}); "
                             f"stop what uses it or pick another {flag}") from None


@dataclass
class Platform:
    """Everything one eas-server runs, wired together (the composition root's result)."""

    store: Store
    controller: Controller
    gateway: Gateway
    api: ApiContext
    app: Starlette
    """The HTTP application: management API (unless apart), gateway, metrics, health."""
    asgi: QueueFront
    """`app` behind the predict fast path and the queue service of Async services: what uvicorn serves."""
    console: Console | None = None
    """The web console at /console (its metrics sampler starts with the controller)."""
    admin: Starlette | None = None
    """The management API and the console on a listener of their own (`--admin-port`)."""
    backflow: BackflowWriter | None = None
    """Writes the gateway's data backflow copies into the store (started by `main`)."""
    jobs: JobRunner | None = None
    """Runs batch prediction jobs through this server's gateway (started by `main`)."""
    dispatcher: Dispatcher | None = None
    """Feeds Async services' instances from their input queues (started with the gateway)."""


def compose(store: Store, backend: Backend, data_dir: Path, endpoint: str, *, region: str = "local",
            access_id: str, access_key: str, leader: LeaderLease | None = None,
            grpc: tuple[str, int] | None = None, interval_s: float = 1.0, admin_apart: bool = False,
            limits: ListenerLimits = ListenerLimits(), server_id: str = "local") -> Platform:
    """Wire store, controller, gateway and API over a backend; nothing starts yet.

    `main` composes over Ray; tests compose over an in-memory backend. With
    `admin_apart`, the management API is `Platform.admin`, not part of `app`.
    """
    routes = RouteTable()
    key = internal_key(store)
    controller = Controller(store, backend, routes, str(data_dir / "cache"), key, interval_s=interval_s,
                            leader=leader)
    routes.set_waker(controller.demand)
    api = ApiContext(store, controller, access_id, access_key, region, endpoint)
    gateway = Gateway(routes, "")  # each route carries its service's own key; the master key stays here
    gateway.metrics.attach(lambda: list(controller.instance_stats.values()), controller.service_counts)
    console = Console(store, controller, gateway, access_id=access_id, access_key=access_key, region=region,
                      endpoint=endpoint)
    grpc_gateway = GrpcGateway(gateway, *grpc, max_concurrent_rpcs=limits.concurrency,
                               handshake_timeout_s=limits.head_timeout_s) if grpc else None
    queues = QueueService(store, server_id)
    queues.on_put = controller.demand  # a put wakes a service scaled to zero
    dispatcher = Dispatcher(queues, gateway, lambda: controller.leading)
    app = build_app(api, gateway, grpc_gateway, console, admin_apart, dispatcher)
    admin = build_admin_app(api, console) if admin_apart else None
    asgi = QueueFront(PredictFastPath(app, EasHttp(gateway).predict), queues, gateway)
    return Platform(store, controller, gateway, api, app, asgi, console, admin,
                    BackflowWriter(store, gateway.capture),
                    JobRunner(store, endpoint, leading=lambda: controller.leading, reconcile=controller.retry,
                              work_dir=data_dir / "jobs"),
                    dispatcher)


def _healthz(api: ApiContext):  # noqa: ANN202
    async def healthz(request):  # noqa: ANN001, ANN202
        # Every server answers (leader or follower); "leader" says whose controller acts.
        return JSONResponse({"status": "ok", "version": __version__, "leader": api.controller.leading,
                             "store": api.store.kind})

    return healthz


def management_routes(api: ApiContext, console: Console | None) -> list[BaseRoute]:
    """The management API, and the web console beside the API it drives (docs/console.md)."""
    api_routes = [*ServicesApi(api).routes(), *TrafficApi(api).routes(), *AccessKeysApi(api).routes(),
                  *BackflowApi(api).routes(), *JobsApi(api).routes()]
    return [*api_routes, *(console.routes(api_routes) if console is not None else [])]


def build_admin_app(api: ApiContext, console: Console | None = None) -> Starlette:
    """The management listener's application (`--admin-port`): health and management only."""
    return Starlette(routes=[Route("/healthz", _healthz(api), methods=["GET"]), *management_routes(api, console)])


def _served_apart(request):  # noqa: ANN001, ANN202
    return JSONResponse({"Code": "NotFound", "Message": "the management API is not served on this port"}, 404)


def build_app(api: ApiContext, gateway: Gateway, grpc: GrpcGateway | None = None,
              console: Console | None = None, admin_apart: bool = False,
              dispatcher: Dispatcher | None = None) -> Starlette:
    """Health, metrics and the predict gateway; the management API too unless it is apart
    (then its paths answer 404 here, whatever the credentials)."""
    healthz = _healthz(api)

    async def metrics(request):  # noqa: ANN001, ANN202
        # Rendering reads only memory (the controller's last counts and scrape).
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *EasHttp(gateway).routes(),  # /api/predict/... and DIRECT discovery
            *OipHttp(gateway).routes(),  # Open Inference Protocol: /v2/health/*, /v2/models/...
            *([Route("/api/v2/{rest:path}", _served_apart, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])]
              if admin_apart else management_routes(api, console)),
        ],
        lifespan=gateway_lifespan(gateway, grpc, dispatcher),
    )


def gateway_lifespan(gateway: Gateway, grpc: GrpcGateway | None = None,  # noqa: ANN202
                     dispatcher: Dispatcher | None = None):
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if grpc is not None:  # on the HTTP server's loop: both share the gateway's connections
            await grpc.start()
        if dispatcher is not None:  # on the same loop: it forwards through the gateway
            dispatcher.start()
        yield
        if dispatcher is not None:
            await dispatcher.stop()
        if grpc is not None:
            await grpc.stop()
        await gateway.close()

    return lifespan


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per stats poll is noise
    if args.access_log:
        enable_access_log(args.access_log)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # the store, eascmd.conf and server-id hold secrets: the server's user only
    check_port_free(args.host, args.port)
    if args.admin_port is not None:
        if args.admin_port == args.port:
            raise SystemExit("eas-server: --admin-port must differ from --port")
        check_port_free(args.admin_host, args.admin_port, "--admin-port")
    if args.grpc_port:
        check_port_free(args.host, args.grpc_port, "--grpc-port (0 turns gRPC off)")
    lock_fd = lock_data_dir(data_dir)  # noqa: F841 (held for the life of the process)

    target = args.store or str(data_dir / "eas.db")
    log.info("store: %s", redact(target))
    store = Store(target)
    access_id, access_key = admin_credentials(store)
    public_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    endpoint = f"http://{public_host}:{args.port}"
    admin_host = "127.0.0.1" if args.admin_host in ("0.0.0.0", "::", "") else args.admin_host
    admin_endpoint = endpoint if args.admin_port is None else f"http://{admin_host}:{args.admin_port}"
    limits = ListenerLimits(concurrency=args.limit_concurrency, keep_alive_s=args.keep_alive,
                            head_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout)

    os.environ[container.RUNTIME_ENV] = args.container_runtime  # replicas inherit it (eas/backend/ray_serve.py)
    owner = container.owner_of(str(data_dir / "cache"))
    if not args.ray_address:
        # A local Ray died with the previous server (kill -9 included), and its instances
        # with it: any container of ours still here is an orphan.
        container.reap(owner)

    from eas.backend import ray_serve  # Ray is imported only here, after the cheap checks

    num_cpus = args.num_cpus or (None if args.ray_address else 4 * (os.cpu_count() or 1))
    log.info("starting Ray (%s)", args.ray_address or f"local, {num_cpus} logical CPUs")
    ray_serve.start_ray(args.ray_address, num_cpus)
    server_id = server_identity(data_dir)
    platform = compose(store, ray_serve.RayBackend(container_owner=owner), data_dir, endpoint, region=args.region,
                       access_id=access_id, access_key=access_key, leader=LeaderLease(store, server_id, args.lease_ttl),
                       server_id=server_id,
                       grpc=(args.host, args.grpc_port) if args.grpc_port else None,
                       admin_apart=args.admin_port is not None, limits=limits)
    platform.controller.allow_cpu_fallback = args.allow_cpu_fallback
    platform.controller.start()
    if platform.console is not None:
        platform.console.start()
    for worker in (platform.backflow, platform.jobs):
        if worker is not None:
            worker.start()
    config.write(data_dir / "eascmd.conf", config.ClientConfig(admin_endpoint, access_id, access_key, args.region))
    log.info("eas-server %s listening on %s, management API on %s (eascmd config: %s)", __version__, endpoint,
             admin_endpoint, data_dir / "eascmd.conf")
    servers = [uvicorn.Server(uvicorn_config(platform.asgi, limits, host=args.host, port=args.port,
                                             log_level="warning", access_log=False, timeout_graceful_shutdown=10))]
    if platform.admin is not None:
        servers.append(uvicorn.Server(uvicorn_config(
            platform.admin, limits, host=args.admin_host, port=args.admin_port, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=10)))
    try:
        serve(servers)
    finally:
        log.info("shutting down")
        for worker in (platform.jobs, platform.backflow):
            if worker is not None:
                worker.stop()
        if platform.console is not None:
            platform.console.stop()
        platform.controller.stop()
        if not args.ray_address:
            ray_serve.stop_ray()
        store.close()


def serve(servers: list[uvicorn.Server]) -> None:
    """Run the listeners on one event loop (they share the gateway, the controller and the
    store) until a signal stops them all: the first one's lifespan runs the gateway (and
    gRPC); each of the others installs its signal handlers over the previous one's and
    hands a signal on when it has stopped (uvicorn's own chaining)."""
    first, *others = servers
    if not others:
        first.run()
        return

    async def run_all() -> None:
        rest = [asyncio.ensure_future(s.serve()) for s in others]
        try:
            await first.serve()
        finally:
            for s in others:
                s.should_exit = True
            await asyncio.gather(*rest, return_exceptions=True)

    factory = getattr(first.config, "get_loop_factory", lambda: None)()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run_all())


if __name__ == "__main__":
    sys.exit(main())
