"""`eas-server`: the control plane and the predict gateway in one process.

Start-up order matters: the store first (the truth), then Ray, then the controller
(which redeploys whatever the store says should run), then the HTTP port. The port
is checked before Ray starts so a taken port fails in a second, not after Ray's boot.
"""

from __future__ import annotations

import argparse
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
from starlette.routing import Route

from eas import __version__
from eas.api.base import ApiContext
from eas.api.services import ServicesApi
from eas.api.traffic import TrafficApi
from eas.client import config
from eas.control.backend import Backend
from eas.control.controller import Controller
from eas.control.leader import LeaderLease, server_identity
from eas.control.store import Store, redact
from eas.gateway.core import Gateway
from eas.gateway.grpc_server import GrpcGateway
from eas.gateway.http import EasHttp
from eas.gateway.oip_http import OipHttp
from eas.gateway.route_table import RouteTable
from eas.protocols.http import PredictFastPath

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
    p.add_argument("--port", type=int, default=8080, help="port for the API and the gateway (default 8080)")
    p.add_argument("--grpc-port", type=int, default=8081,
                   help="gRPC port on the same host: KServe v2 inference.GRPCInferenceService and "
                   "eas.Predict (default 8081; 0 turns gRPC off)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster; without it a local Ray is started on loopback")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="logical CPUs of the embedded Ray (default 4 per core, so small "
                   "services can share a laptop; on a cluster Ray's own count is used)")
    p.add_argument("--region", default="local", help="region name shown by eascmd (default local)")
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
    """The key the gateway presents to instances; kept so instances outlive a restart.

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
    """The HTTP application: management API, gateway, metrics, health."""
    asgi: PredictFastPath
    """`app` behind the predict fast path: what uvicorn serves."""


def compose(store: Store, backend: Backend, data_dir: Path, endpoint: str, *, region: str = "local",
            access_id: str, access_key: str, leader: LeaderLease | None = None,
            grpc: tuple[str, int] | None = None, interval_s: float = 1.0) -> Platform:
    """Wire store, controller, gateway and API over a backend; nothing starts yet.

    `main` composes over Ray; tests compose over an in-memory backend.
    """
    routes = RouteTable()
    key = internal_key(store)
    controller = Controller(store, backend, routes, str(data_dir / "cache"), key, interval_s=interval_s,
                            leader=leader)
    routes.set_waker(controller.demand)
    api = ApiContext(store, controller, access_id, access_key, region, endpoint)
    gateway = Gateway(routes, key)
    gateway.metrics.attach(lambda: list(controller.instance_stats.values()), controller.service_counts)
    app = build_app(api, gateway, GrpcGateway(gateway, *grpc) if grpc else None)
    return Platform(store, controller, gateway, api, app, PredictFastPath(app, EasHttp(gateway).predict))


def build_app(api: ApiContext, gateway: Gateway, grpc: GrpcGateway | None = None) -> Starlette:
    async def healthz(request):  # noqa: ANN001, ANN202
        # Every server answers (leader or follower); "leader" says whose controller acts.
        return JSONResponse({"status": "ok", "version": __version__, "leader": api.controller.leading,
                             "store": api.store.kind})

    async def metrics(request):  # noqa: ANN001, ANN202
        # Rendering reads only memory (the controller's last counts and scrape).
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *EasHttp(gateway).routes(),  # /api/predict/... and DIRECT discovery
            *OipHttp(gateway).routes(),  # Open Inference Protocol: /v2/health/*, /v2/models/...
            *ServicesApi(api).routes(),
            *TrafficApi(api).routes(),
        ],
        lifespan=gateway_lifespan(gateway, grpc),
    )


def gateway_lifespan(gateway: Gateway, grpc: GrpcGateway | None = None):  # noqa: ANN202
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if grpc is not None:  # on the HTTP server's loop: both share the gateway's connections
            await grpc.start()
        yield
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
    check_port_free(args.host, args.port)
    if args.grpc_port:
        check_port_free(args.host, args.grpc_port, "--grpc-port (0 turns gRPC off)")
    lock_fd = lock_data_dir(data_dir)  # noqa: F841 (held for the life of the process)

    target = args.store or str(data_dir / "eas.db")
    log.info("store: %s", redact(target))
    store = Store(target)
    access_id, access_key = admin_credentials(store)
    public_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    endpoint = f"http://{public_host}:{args.port}"

    from eas.backend import ray_serve  # Ray is imported only here, after the cheap checks

    num_cpus = args.num_cpus or (None if args.ray_address else 4 * (os.cpu_count() or 1))
    log.info("starting Ray (%s)", args.ray_address or f"local, {num_cpus} logical CPUs")
    ray_serve.start_ray(args.ray_address, num_cpus)
    platform = compose(store, ray_serve.RayBackend(), data_dir, endpoint, region=args.region, access_id=access_id,
                       access_key=access_key, leader=LeaderLease(store, server_identity(data_dir), args.lease_ttl),
                       grpc=(args.host, args.grpc_port) if args.grpc_port else None)
    platform.controller.start()
    config.write(data_dir / "eascmd.conf", config.ClientConfig(endpoint, access_id, access_key, args.region))
    log.info("eas-server %s listening on %s (eascmd config: %s)", __version__, endpoint,
             data_dir / "eascmd.conf")
    server = uvicorn.Server(uvicorn.Config(
        platform.asgi, host=args.host, port=args.port, log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    ))
    try:
        server.run()
    finally:
        log.info("shutting down")
        platform.controller.stop()
        if not args.ray_address:
            ray_serve.stop_ray()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
