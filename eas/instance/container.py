"""Custom images: an instance's containers, run by podman (default) or docker.

A container service's instance is its containers (spec: eas/spec/container.py) behind
the same instance server as a processor's: token, queue limit (450), keepalive (408)
and counters hold unchanged, and each request is forwarded, with its method, sub-path
and query, to the serving container's port published on this node. The instance starts
its containers, waits for the health check before it takes traffic, fails (and is
replaced) when they exit, and removes them when it stops. Each container carries labels
naming its owner (the eas-server's data directory), service and instance, so containers
whose instance is gone (the replica or the server killed with SIGKILL) are found and
removed (`reap`). The runtime is a CLI (`EAS_CONTAINER_RUNTIME`: podman or docker).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import httpx

from eas.protocols.wire import (
    INSTANCE_HEADER,
    INTERNAL_KEY_HEADER,
    PROCESSOR_TIME_HEADER,
    REQUEST_ID_HEADER,
    add_header,
)
from eas.spec import ServiceSpec
from eas.spec.container import ContainerSpec, HealthCheck
from processors.base import (
    ModelContext,
    ModelLoadError,
    Processor,
    ProcessorError,
    Request,
    Response,
    error_body,
)

log = logging.getLogger("eas.container")

#: The container runtime CLI (eas-server --container-runtime sets it; replicas inherit it).
RUNTIME_ENV = "EAS_CONTAINER_RUNTIME"
#: Seconds a container may take to pass its health check before the instance fails.
START_TIMEOUT_ENV = "EAS_CONTAINER_START_TIMEOUT"
ENV_VARS = (RUNTIME_ENV, START_TIMEOUT_ENV)
RUNTIMES = ("podman", "docker")
DEFAULT_START_TIMEOUT_S = 600.0

LABEL_OWNER = "eas.owner"
LABEL_SERVICE = "eas.service"
LABEL_INSTANCE = "eas.instance"
#: Last log lines of a container that exited, in the reason the user reads.
LOG_LINES = 10
CLI_TIMEOUT_S = 120.0
#: Headers that describe one hop, never passed on to a container.
HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "content-length", "authorization"})


#: A container's answer headers the instance sets itself (length, framing, type).
ANSWER_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-type",
                                "date", "server", "trailer", "upgrade", REQUEST_ID_HEADER.lower(),
                                INSTANCE_HEADER.lower(), PROCESSOR_TIME_HEADER.lower(), INTERNAL_KEY_HEADER.lower()})


class ContainerError(Exception):
    """The runtime refused or failed a command; the text says what to do."""


def runtime_cli() -> str:
    """The configured runtime's name (podman unless EAS_CONTAINER_RUNTIME says docker)."""
    name = (os.environ.get(RUNTIME_ENV) or "podman").strip()
    return name if name in RUNTIMES else "podman"


def missing_runtime(name: str | None = None) -> str | None:
    """Why containers cannot run on this node (the runtime is not installed), or None."""
    name = name or runtime_cli()
    if shutil.which(name):
        return None
    if name == "podman":
        return ("the container runtime 'podman' is not installed on this node: install it (Debian/Ubuntu: "
                "apt-get install -y podman runc; see docs/operations.md, 'Containers') or start eas-server "
                "with --container-runtime docker")
    return ("the container runtime 'docker' is not installed on this node: install Docker Engine, or start "
            "eas-server with --container-runtime podman")


def owner_of(cache_dir: str) -> str:
    """The owner label of one eas-server's containers: a digest of its data directory, so
    several servers on one machine never remove each other's containers."""
    return hashlib.sha256(os.path.abspath(cache_dir).encode()).hexdigest()[:16]


def cli(args: Sequence[str], timeout: float = CLI_TIMEOUT_S) -> str:
    """Run the runtime CLI; its stdout, or ContainerError with its stderr."""
    name = runtime_cli()
    try:
        done = subprocess.run([name, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise ContainerError(missing_runtime(name) or f"{name} not found") from None
    except subprocess.TimeoutExpired:
        raise ContainerError(f"{name} {args[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ContainerError(f"{name} {args[0]} failed: {(done.stderr or done.stdout).strip()[-600:]}")
    return done.stdout


def managed(owner: str) -> list[dict[str, str]]:
    """This owner's containers on this node: id, service, instance, state."""
    labels = f'{{{{index .Labels "{LABEL_SERVICE}"}}}}\t{{{{index .Labels "{LABEL_INSTANCE}"}}}}'
    out = cli(["ps", "-a", "--filter", f"label={LABEL_OWNER}={owner}", "--format",
               "{{.ID}}\t" + labels + "\t{{.State}}"], timeout=30)
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            row = dict(zip(("id", "service", "instance", "state"), parts))
            row["state"] = _state_word(row["state"])
            rows.append(row)
    return rows


def _state_word(text: str) -> str:
    """docker prints "running", podman 4 "Up 3 seconds ago": one word for both."""
    word = text.strip().split(" ", 1)[0].lower()
    return {"up": "running"}.get(word, word)


def remove(ids: Sequence[str]) -> None:
    """Kill and remove containers by id or name; one already gone is no error.

    At once (podman's `-t 0`; docker's `rm -f` kills at once too): the replica has drained
    before it gets here, and podman's default 10 s SIGTERM wait (a PID 1 such as python
    ignores SIGTERM) outlasted the replica's shutdown, so Ray killed `podman rm` midway and
    left the container running with podman's record of it gone, where no reaper sees it."""
    ids = [i for i in ids if i]
    if ids:
        try:
            cli(["rm", "-f", *(["-t", "0"] if runtime_cli() == "podman" else []), *ids], timeout=60)
        except ContainerError as exc:
            if "no such container" not in str(exc).lower():
                log.warning("could not remove containers %s: %s", ", ".join(ids), exc)


def reap(owner: str, keep: set[str] | None = None) -> list[str]:
    """Remove this owner's containers whose instance is not in `keep`; returns their ids.

    Does nothing where no runtime is installed (a node without container services)."""
    if missing_runtime():
        return []
    try:
        gone = [row["id"] for row in managed(owner) if row["instance"] not in (keep or set())]
    except ContainerError as exc:
        log.warning("could not list containers: %s", exc)
        return []
    remove(gone)
    if gone:
        log.info("removed %d container(s) whose instance is gone: %s", len(gone), ", ".join(gone))
    return gone


def last_logs(cid: str, lines: int = LOG_LINES) -> list[str]:
    try:
        done = subprocess.run([runtime_cli(), "logs", "--tail", str(lines), cid], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()][-lines:]


class Container:
    """One running container of an instance: started, watched, removed."""

    def __init__(self, cid: str, name: str, spec: ContainerSpec) -> None:
        self.id = cid
        self.name = name
        self.spec = spec
        self._follower: subprocess.Popen[bytes] | None = None

    def state(self) -> tuple[str, int]:
        """(status, exit code): "running", "exited", ... ("gone", -1) when it no longer exists."""
        try:
            out = cli(["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.id], timeout=30)
        except ContainerError:
            return "gone", -1
        status, _, code = out.strip().partition(" ")
        return status, int(code or 0)

    def follow_logs(self) -> None:
        """Copy the container's stdout and stderr into this process's (the instance's logs)."""
        try:
            self._follower = subprocess.Popen([runtime_cli(), "logs", "-f", self.id], stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.warning("cannot follow the logs of %s: %s", self.name, exc)

    def published(self, port: int) -> tuple[str, int]:
        out = cli(["port", self.id, f"{port}/tcp"], timeout=30).strip().splitlines()
        if not out:
            raise ContainerError(f"port {port} of {self.name} is not published")
        host, _, published = out[0].strip().rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(published)

    def exit_reason(self) -> str:
        status, code = self.state()
        lines = last_logs(self.id)
        told = " | ".join(lines) if lines else "(no output)"
        return f"container {self.name} ({self.spec.image}) {status} with exit code {code}; last log lines: {told}"

    def remove(self) -> None:
        if self._follower is not None:
            self._follower.kill()
            self._follower.wait(timeout=5)
        remove([self.id])


def run_args(spec: ContainerSpec, service: ServiceSpec, name: str, labels: Mapping[str, str], host_ip: str,
             mounts: Mapping[str, str], network: str | None) -> list[str]:
    """`<runtime> run` arguments for one container (without the runtime's name)."""
    meta = service.metadata
    args = ["run", "-d", "--name", name]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    cpu = spec.resources.cpu if spec.resources and spec.resources.cpu else (meta.cpu if meta.qos != "BestEffort" else None)
    memory = spec.resources.memory if spec.resources and spec.resources.memory else meta.memory
    if cpu:
        args += ["--cpus", f"{cpu:g}"]
    if memory:
        args += ["--memory", f"{memory}m"]
    if meta.shm_size:
        args += ["--shm-size", f"{meta.shm_size}g"]
    for env in spec.env:
        args += ["-e", f"{env.name}={env.value}"]
    for mount_path, local in mounts.items():
        args += ["-v", f"{local}:{mount_path}"]
    if network:
        args += ["--network", network]
    elif spec.port:
        args += ["-p", f"{host_ip}::{spec.port}"]
    argv = spec.argv()
    if spec.prepare and (spec.prepare.pythonRequirements or spec.prepare.pythonRequirementsPath):
        if not argv:
            raise ModelLoadError(f"container {spec.image}: 'prepare' needs 'script' or 'command' to run after it")
        pip = "pip install --no-cache-dir "
        pip += (shlex.join(spec.prepare.pythonRequirements) if spec.prepare.pythonRequirements
                else f"-r {shlex.quote(spec.prepare.pythonRequirementsPath or '')}")
        argv = ["sh", "-c", f"{pip} && exec {shlex.join(argv)}"]
    if argv:
        args += ["--entrypoint", argv[0], spec.image, *argv[1:]]
    else:
        args.append(spec.image)
    return args


def registry_of(image: str) -> str:
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"


def pull_with_auth(image: str, docker_auth: str) -> None:
    """Pull a private image with `dockerAuth` (base64 user:password) before it runs."""
    user, _, password = base64.b64decode(docker_auth).decode().partition(":")
    if runtime_cli() == "podman":
        cli(["pull", "--creds", f"{user}:{password}", image], timeout=1800)
        return
    with tempfile.TemporaryDirectory() as config:  # docker reads credentials from a config file only
        with open(os.path.join(config, "config.json"), "w") as fh:
            json.dump({"auths": {registry_of(image): {"auth": docker_auth}}}, fh)
        cli(["--config", config, "pull", image], timeout=1800)


class ContainerGroup:
    """An instance's containers: the first serves (unless a processor does), the rest
    share its network (sidecars reach it, and it them, on localhost)."""

    def __init__(self, service: ServiceSpec, instance: str, owner: str, host_ip: str,
                 mounts: Mapping[str, str]) -> None:
        reason = missing_runtime()
        if reason:
            raise ModelLoadError(reason)
        self.service = service
        self.containers: list[Container] = []
        self.endpoint: tuple[str, int] | None = None
        labels = {LABEL_OWNER: owner, LABEL_SERVICE: service.name, LABEL_INSTANCE: instance}
        serving = service.serving_container
        name = ""
        try:
            for i, spec in enumerate(service.containers or []):
                if service.dockerAuth:
                    pull_with_auth(spec.image, service.dockerAuth)
                name = f"eas-{service.name}-{instance}-{i}".replace("_", "-")
                if serving is None:
                    network = "host"  # beside a processor, which reaches it on the node's localhost
                else:
                    network = f"container:{self.containers[0].id}" if i else None
                cid = cli(run_args(spec, service, name, labels, host_ip, mounts, network), timeout=1800).strip()
                container = Container(cid.splitlines()[-1] if cid else name, name, spec)
                self.containers.append(container)
                container.follow_logs()
            if serving is not None and serving.port:
                self.endpoint = self.containers[0].published(serving.port)
        except ContainerError as exc:
            gone = self.exited()  # one that exited at once has no published port: say why it exited
            reason = gone.exit_reason() if gone is not None else str(exc)
            self.close()
            remove([name])  # a run that failed may still have created it
            raise ModelLoadError(reason) from None
        except BaseException:
            self.close()
            raise

    def wait_healthy(self) -> None:
        """Wait until every container with a check passes it (the serving one: its health
        check, else a TCP connect to its port; a sidecar on the node's network: likewise on
        its own port), so no request and no processor meets one still starting. Raises
        ModelLoadError with the reason: a container exited, or the start timeout passed."""
        limit = float(os.environ.get(START_TIMEOUT_ENV) or DEFAULT_START_TIMEOUT_S)
        deadline = time.monotonic() + limit
        for i, each in enumerate(self.containers):
            endpoint, port = self.probe_target(i)
            check = each.spec.health_check
            if endpoint is None and not (check and check.exec):
                continue  # nothing to check from here but that it runs (below)
            if check and check.initial_delay_seconds:
                time.sleep(min(check.initial_delay_seconds, limit))
            passed, needed = 0, check.success_threshold if check else 1
            while passed < needed:
                gone = self.exited()
                if gone is not None:
                    raise ModelLoadError(gone.exit_reason())
                passed = passed + 1 if probe(check, each, endpoint, port) else 0
                if passed >= needed:
                    break
                if time.monotonic() >= deadline:
                    lines = " | ".join(last_logs(each.id)) or "(no output)"
                    raise ModelLoadError(f"container {each.name} did not pass its health check within {limit:.0f} s "
                                         f"({START_TIMEOUT_ENV}); last log lines: {lines}")
                time.sleep(check.period_seconds if check else 0.5)
        gone = self.exited()
        if gone is not None:
            raise ModelLoadError(gone.exit_reason())

    def probe_target(self, i: int) -> tuple[tuple[str, int] | None, int | None]:
        """Where container i is checked from this node: (host, port) and its own port."""
        spec = self.containers[i].spec
        if i == 0 and self.endpoint is not None:
            return self.endpoint, spec.port
        if self.service.serving_container is None and spec.port:  # a sidecar on the node's network
            return ("127.0.0.1", spec.port), spec.port
        return None, None

    def exited(self) -> Container | None:
        """A container that is no longer running, if any."""
        return next((c for c in self.containers if c.state()[0] != "running"), None)

    def close(self) -> None:
        for container in self.containers:
            container.remove()
        self.containers = []


def probe(check: HealthCheck | None, container: Container, endpoint: tuple[str, int] | None,
          port: int | None) -> bool:
    """One health check; no check given: a TCP connect to the serving port."""
    timeout = check.timeout_seconds if check else 1
    if check and check.exec:
        try:
            cli(["exec", container.id, *check.exec.command], timeout=timeout)
            return True
        except ContainerError:
            return False
    if endpoint is None:
        return True
    host, published = endpoint
    wanted = (check.http_get.port if check and check.http_get else check.tcp_socket.port if check and check.tcp_socket
              else None)
    if wanted is not None and wanted != port:
        try:  # published on the node, or (a sidecar on the node's network) the node's own port
            host, published = container.published(wanted) if published != port else (host, wanted)
        except ContainerError:
            return False
    if check and check.http_get:
        try:
            answer = httpx.get(f"http://{host}:{published}{check.http_get.path}", timeout=timeout)
            return 200 <= answer.status_code < 400
        except httpx.HTTPError:
            return False
    try:
        with socket.create_connection((host, published), timeout=timeout):
            return True
    except OSError:
        return False


class ContainerProcessor(Processor):
    """The serving container as a processor: each request forwarded to its port."""

    def __init__(self, ctx: ModelContext, service: ServiceSpec, instance: str, owner: str, host_ip: str) -> None:
        super().__init__(ctx)
        self.service = service
        self.instance = instance
        self.owner = owner
        self.host_ip = host_ip
        self.group: ContainerGroup | None = None
        self.http: httpx.Client | None = None
        self.failures = 0

    def load(self) -> None:
        """Start the containers and wait for the health check (or their exit: the reason)."""
        self.group = ContainerGroup(self.service, self.instance, self.owner, self.host_ip, self.ctx.mounts)
        try:
            self.group.wait_healthy()
        except BaseException:
            self.close()
            raise
        workers = self.service.metadata.concurrency
        self.http = httpx.Client(timeout=None, limits=httpx.Limits(max_connections=workers,
                                                                   max_keepalive_connections=workers))

    def check(self) -> None:
        """Raise when the instance must be replaced: a container exited, or the health
        check failed `failure_threshold` times in a row (called every few seconds)."""
        if self.group is None:
            return
        gone = self.group.exited()
        if gone is not None:
            raise RuntimeError(gone.exit_reason())
        serving = self.service.serving_container
        if serving is None:
            return
        if probe(serving.health_check, self.group.containers[0], self.group.endpoint, serving.port):
            self.failures = 0
            return
        self.failures += 1
        threshold = serving.health_check.failure_threshold if serving.health_check else 3
        if self.failures >= threshold:
            raise RuntimeError(f"container {self.group.containers[0].name} failed its health check "
                               f"{self.failures} times in a row")

    def predict(self, request: Request) -> Response:
        if self.http is None or self.group is None or self.group.endpoint is None:
            raise ProcessorError("this instance has no serving container (a processor serves it)", 503)
        host, port = self.group.endpoint
        path = "/" + urllib.parse.quote(request.sub_path, safe="/%:@!$&'()*+,;=-._~")
        url = f"http://{host}:{port}{path}" + (f"?{request.query}" if request.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        if request.content_type:
            headers["content-type"] = request.content_type
        try:
            answer = self.http.send(self.http.build_request(request.method, url, content=request.body,
                                                            headers=headers), stream=True)
        except httpx.HTTPError as exc:
            return Response(error_body(502, f"the container did not answer: {type(exc).__name__}: {exc}",
                                       request.request_id), 502)
        content_type = answer.headers.get("content-type") or "application/octet-stream"
        passed: dict[str, str] = {}
        for name, value in answer.headers.multi_items():  # one line each: Set-Cookie may repeat
            if name not in ANSWER_HOP_HEADERS:
                add_header(passed, name, value)
        if "content-length" in answer.headers and not content_type.startswith("text/event-stream"):
            try:
                return Response(answer.read(), answer.status_code, content_type, passed)
            except httpx.HTTPError as exc:
                return Response(error_body(502, f"the container's answer broke off: {exc}", request.request_id), 502)
            finally:
                answer.close()
        # Chunked or server-sent events (an LLM server's tokens): passed on piece by piece.
        return StreamedAnswer(b"", answer.status_code, content_type, passed, chunks=_pieces(answer))

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.group is not None:
            self.group.close()
            self.group = None


@dataclass
class StreamedAnswer(Response):
    """A container's answer passed on as it comes (the runtime reads `chunks` on a worker
    thread; eas/instance/core.py sends each piece on within the keepalive)."""

    chunks: Iterator[bytes] | None = None


def _pieces(answer: httpx.Response) -> Iterator[bytes]:
    """The body's pieces as they arrive; closed (the connection released) at the end or
    when the client goes away (the generator is closed)."""
    try:
        for piece in answer.iter_raw():
            if piece:
                yield piece
    finally:
        answer.close()


def describe(rows: list[dict[str, str]]) -> dict[str, str]:
    """Container state by instance (what `eascmd w` shows): its worst, so an exited
    sidecar shows as well as an exited serving container."""
    states: dict[str, str] = {}
    for row in rows:
        if states.get(row["instance"], "running") == "running":
            states[row["instance"]] = row["state"]
    return states
