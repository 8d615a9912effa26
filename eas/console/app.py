"""The console's routes, all under `/console` (docs/console.md).

| path | what |
|---|---|
| `GET /console/` and `/console/static/...` | the page: plain HTML, CSS and JavaScript shipped in this package |
| `POST /console/session` | sign in with `{"AccessId", "AccessKey"}`: sets the session cookie, answers the CSRF token |
| `GET /console/session` | who is signed in (and the CSRF token again, for a reloaded page) |
| `DELETE /console/session` | sign out |
| `/console/api/v2/...` | the management API itself (docs/api.md), authenticated by the session |
| `GET /console/metrics[/{name}]` | the metrics history (history.py): latest per service, or one service's samples |
| `GET /console/traffic/{name}` | the traffic rows an endpoint name takes part in (the API has no GET for them) |
| `POST /console/test/{name}` | the online test: the body goes through the real gateway (`Gateway.handle`) with the service's token |

Every answer other than the page and its assets is JSON; errors are the API's
envelope `{"RequestId", "Code", "Message"}`.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from eas import __version__
from eas.console.history import MetricsHistory
from eas.console.session import COOKIE, CSRF_HEADER, Session, Sessions
from eas.control.controller import Controller
from eas.control.store import Store, TrafficRecord
from eas.gateway.core import Call, Gateway, new_request_id
from eas.protocols.auth import basic_auth_header
from eas.protocols.http import read_body
from eas.protocols.wire import REQUEST_ID_HEADER, TARGET_HEADER

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/console"
#: What the console shows of an online test's answer body (the status and size are exact).
MAX_SHOWN_ANSWER_BYTES = 256 * 1024
MAX_SIGN_IN_BODY_BYTES = 4096

#: Every console answer: no framing, no sniffing, no referrer, scripts and styles only
#: from the console's own files (no inline script, nothing from a CDN).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class ConsoleError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), "Code": code, "Message": message},
                        status_code=status, headers={"Cache-Control": "no-store"})


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), **data}, headers={"Cache-Control": "no-store"})


class Console:
    """The console of one eas-server: its sessions, its metrics history and its routes."""

    def __init__(self, store: Store, controller: Controller, gateway: Gateway, *, access_id: str, access_key: str,
                 region: str, endpoint: str, history: MetricsHistory | None = None) -> None:
        self.store = store
        self.controller = controller
        self.gateway = gateway
        self.region = region
        self.endpoint = endpoint
        self._basic = basic_auth_header(access_id, access_key)
        # Servers sharing a store share the secret, so a session works on each of them.
        secret = store.setting("console_secret") or store.init_setting("console_secret", secrets.token_urlsafe(32))
        self.sessions = Sessions(access_id, access_key, secret)
        self.history = history or MetricsHistory(gateway.metrics, lambda: list(controller.instance_stats.values()),
                                                 controller.service_counts)
        self.features: dict[str, bool] = {}
        self._api: Router | None = None

    def start(self) -> None:
        """Start sampling metrics (eas-server's main; tests call `history.sample()` themselves)."""
        self.history.start()

    def stop(self) -> None:
        self.history.stop()

    # -- routes ---------------------------------------------------------------------------

    def routes(self, api_routes: Sequence[BaseRoute]) -> list[BaseRoute]:
        """The console's routes; `api_routes` are the management API's, which the browser
        reaches through `/console/api/v2/...` with its session."""
        self._api = Router(routes=list(api_routes))
        paths = [getattr(r, "path", "") for r in api_routes]
        # Hooks for API endpoints other issues add: the page shows them once they exist.
        self.features = {
            "logs": any(p.endswith("/{name}/logs") for p in paths),
            "queue": any("/queue" in p for p in paths),
            "labels": any("label" in p.lower() for p in paths),
        }
        inner = Router(routes=[
            Route("/", self.page, methods=["GET"]),
            Route("/session", self.sign_in, methods=["POST"]),
            Route("/session", self.who, methods=["GET"]),
            Route("/session", self.sign_out, methods=["DELETE"]),
            Route("/metrics", self.metrics_latest, methods=["GET"]),
            Route("/metrics/{name}", self.metrics_of, methods=["GET"]),
            Route("/traffic/{name}", self.traffic_of, methods=["GET"]),
            Route("/test/{name}", self.online_test, methods=["POST"]),
            Mount("/api", app=self._proxy),
            Mount("/static", app=StaticFiles(directory=STATIC)),
        ])
        return [
            Route(PREFIX, _to_slash, methods=["GET"]),
            Mount(PREFIX, app=_with_headers(inner)),
        ]

    # -- the page -------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        html = await run_in_threadpool((STATIC / "index.html").read_bytes)
        return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    # -- sessions -------------------------------------------------------------------------

    def _session(self, request: Request, csrf: bool = True) -> Session:
        session = self.sessions.verify(request.cookies.get(COOKIE))
        if session is None:
            raise ConsoleError(401, "Unauthorized", "sign in with the access id and key from eascmd.conf")
        if csrf and not self.sessions.csrf_ok(session, request.headers.get(CSRF_HEADER)):
            raise ConsoleError(403, "Forbidden", f"missing or wrong {CSRF_HEADER} header: reload the console")
        return session

    def _info(self, session: Session) -> dict[str, Any]:
        return {
            "AccessId": session.access_id,
            "Region": self.region,
            "Endpoint": self.endpoint,
            "Csrf": self.sessions.csrf(session),
            "Expires": int(session.expires),
            "Version": __version__,
            "Features": self.features,
            "MetricsInterval": self.history.interval_s,
        }

    async def sign_in(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "UnsupportedMediaType", 'send {"AccessId": ..., "AccessKey": ...} as application/json')
        body = await read_body(request, MAX_SIGN_IN_BODY_BYTES)
        try:
            data = json.loads(body or b"")
            access_id, access_key = data["AccessId"], data["AccessKey"]
            if not isinstance(access_id, str) or not isinstance(access_key, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, "InvalidParameter", 'send {"AccessId": ..., "AccessKey": ...}')
        if not self.sessions.credentials_ok(access_id, access_key):
            return _error(401, "Unauthorized", "wrong access id or key: use the pair from eascmd.conf")
        cookie, session = self.sessions.issue()
        response = _json(self._info(session))
        response.set_cookie(COOKIE, cookie, max_age=int(self.sessions.ttl_s), path=PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def who(self, request: Request) -> Response:
        try:
            return _json(self._info(self._session(request, csrf=False)))
        except ConsoleError as exc:
            return _error(exc.status, exc.code, exc.message)

    async def sign_out(self, request: Request) -> Response:
        try:
            session = self._session(request)
        except ConsoleError as exc:
            if exc.status == 403:
                return _error(exc.status, exc.code, exc.message)
            session = None  # already signed out: still clear the cookie
        if session is not None:
            self.sessions.revoke(session)
        response = _json({"Message": "signed out"})
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # -- the management API, with the session -----------------------------------------------

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """`/console/api/v2/...` -> the API's own route for `/api/v2/...` with the admin
        credentials: the API's handlers, checks and answers, unchanged."""
        request = Request(scope, receive)
        path = scope["path"]
        root = scope.get("root_path", "")
        rest = path[len(root):] if root and path.startswith(root) else path
        try:
            if scope["type"] != "http":
                raise ConsoleError(404, "NotFound", "no such console path")
            self._session(request)
            if not rest.startswith("/v2/"):
                raise ConsoleError(404, "NotFound", "only the management API (/api/v2/...) is reachable here")
        except ConsoleError as exc:
            await _error(exc.status, exc.code, exc.message)(scope, receive, send)
            return
        assert self._api is not None
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"cookie", CSRF_HEADER.encode())]
        headers.append((b"authorization", self._basic.encode()))
        target = "/api" + rest
        sub = {k: v for k, v in scope.items() if k not in ("path_params", "endpoint", "route", "router", "app")}
        sub.update(path=target, raw_path=target.encode(), root_path="", headers=headers)
        await self._api(sub, receive, send)

    # -- metrics history ---------------------------------------------------------------------

    async def metrics_latest(self, request: Request) -> Response:
        try:
            self._session(request)
        except ConsoleError as exc:
            return _error(exc.status, exc.code, exc.message)
        latest = self.history.latest()
        return _json({"Interval": self.history.interval_s, "Window": self.history.size * self.history.interval_s,
                      "Services": {name: s.to_json() for name, s in latest.items()}})

    async def metrics_of(self, request: Request) -> Response:
        try:
            self._session(request)
            since = _float(request.query_params.get("since"))
        except ConsoleError as exc:
            return _error(exc.status, exc.code, exc.message)
        name = request.path_params["name"]
        samples = self.history.series(name, since)
        backends: dict[str, list[list[float]]] = {}
        row = (await run_in_threadpool(self.store.traffic)).get(name)
        if row is not None and row.kind in ("service", "group"):
            for backend, _ in row.backends:
                series = self.history.series(backend, since) or []
                backends[backend] = [[round(s.t, 3), round(sum(s.served.values()), 3)] for s in series]
        return _json({"Service": name, "Tracked": samples is not None, "Interval": self.history.interval_s,
                      "Window": self.history.size * self.history.interval_s,
                      "Samples": [s.to_json() for s in samples or []], "Backends": backends})

    # -- traffic rows --------------------------------------------------------------------------

    async def traffic_of(self, request: Request) -> Response:
        try:
            self._session(request)
        except ConsoleError as exc:
            return _error(exc.status, exc.code, exc.message)
        name = request.path_params["name"]
        rows = await run_in_threadpool(self.store.traffic)
        own = rows.get(name)
        return _json({
            "Endpoint": _row(own) if own is not None else None,
            "SharedIn": [_row(r) for r in rows.values()
                         if r.name != name and r.kind == "service" and any(s == name for s, _ in r.backends)],
            "Groups": [_row(r) for r in rows.values() if r.kind == "group" and any(s == name for s, _ in r.backends)],
        })

    # -- the online test -------------------------------------------------------------------------

    async def online_test(self, request: Request) -> Response:
        """Send a body to a service through the real gateway, as a client would, with the
        service's own token (or the one given in `X-Test-Token`); answer what came back."""
        try:
            self._session(request)
        except ConsoleError as exc:
            return _error(exc.status, exc.code, exc.message)
        name = request.path_params["name"]
        sub_path = request.query_params.get("path", "").strip("/")
        entry = self.gateway.routes.entry(name)
        token = request.headers.get("x-test-token") or (entry.token if entry is not None else "")
        content_type = request.headers.get("content-type") or "application/octet-stream"
        sent = {"authorization": token, "content-type": content_type}
        if request.headers.get("x-test-target"):
            sent[TARGET_HEADER.lower()] = request.headers["x-test-target"]
        try:
            headers = Headers(headers=sent)
        except UnicodeEncodeError:
            return _error(400, "InvalidParameter", "the token and target must be ASCII")
        path = f"/api/predict/{name}" + (f"/{sub_path}" if sub_path else "")
        call = Call(service=name, headers=headers, path=path, reader=functools.partial(read_body, request),
                    sub_path=sub_path, content_type=content_type, request_id=new_request_id(), client="console")
        started = time.perf_counter()
        answer = await self.gateway.handle(call)
        took_ms = (time.perf_counter() - started) * 1000
        shown = answer.body[:MAX_SHOWN_ANSWER_BYTES]
        try:
            text, encoding = shown.decode("utf-8"), "text"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(shown).decode(), "base64"
        return _json({
            "Status": answer.status,
            "Headers": dict(answer.headers),
            "Body": text,
            "Encoding": encoding,
            "Bytes": len(answer.body),
            "Truncated": len(answer.body) > len(shown),
            "TimeMs": round(took_ms, 3),
            "RequestId": answer.headers.get(REQUEST_ID_HEADER, call.request_id),
            "Path": path,
        })


async def _to_slash(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/")


def _row(row: TrafficRecord) -> dict[str, Any]:
    return {
        "Name": row.name,
        "Kind": row.kind,
        "Backends": [{"Service": s, "Weight": w} for s, w in row.backends],
        "Mirror": {"Target": row.mirror[0], "Ratio": row.mirror[1]} if row.mirror else None,
    }


def _float(text: str | None) -> float | None:
    if text in (None, ""):
        return None
    try:
        return float(text)  # type: ignore[arg-type]
    except ValueError:
        raise ConsoleError(400, "InvalidParameter", "since: seconds since the epoch") from None


def _with_headers(app: Any) -> Any:
    """Add SECURITY_HEADERS to every answer of `app`."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped
