"""`containers[]`: custom images, EAS's dominant way to deploy.

Each entry names an image, how to start it (`script`, a shell line, or `command`), the
port it serves, its environment and a health check; the platform runs it and puts its
gateway, token auth, scaling and releases in front (eas/instance/container.py runs it).
The first container is the one that serves; further ones run beside it in the same
instance (sidecars). With a `processor` as well, the processor serves and every
container is a sidecar (EAS's processor + containers form). Schemas only.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from eas.spec.base import Strict

#: An image reference: [registry[:port]/]path[:tag][@digest], as container runtimes read it.
IMAGE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._\-/:@]*\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*\Z")


class EnvVar(Strict):
    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENV_NAME_RE.fullmatch(v):
            raise ValueError(f"environment variable name {v!r}: letters, digits, '_', '.', '-', not first a digit")
        return v

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, v: Any) -> Any:
        # EAS's JSON often carries numbers here ("value": 8000): they are strings to a process.
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class HttpGet(Strict):
    path: str = "/"
    port: int | None = Field(None, ge=1, le=65535, description="default: the container's port")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path {v!r} must start with '/'")
        return v


class TcpSocket(Strict):
    port: int | None = Field(None, ge=1, le=65535, description="default: the container's port")


class ExecAction(Strict):
    command: list[str] = Field(..., min_length=1)


class HealthCheck(Strict):
    """When an instance may take traffic: one of `http_get`, `tcp_socket`, `exec`
    (none: a TCP connect to the container's port), tried every `period_seconds`."""

    http_get: HttpGet | None = None
    tcp_socket: TcpSocket | None = None
    exec: ExecAction | None = None
    initial_delay_seconds: int = Field(0, ge=0)
    period_seconds: int = Field(1, ge=1)
    timeout_seconds: int = Field(1, ge=1)
    failure_threshold: int = Field(3, ge=1, description="failed checks in a row, once healthy, that restart it")
    success_threshold: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _one(self) -> HealthCheck:
        given = [k for k in ("http_get", "tcp_socket", "exec") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of http_get, tcp_socket, exec, not {' and '.join(given)}")
        return self


class Prepare(Strict):
    """Python packages installed in the container before it starts (`pip install`)."""

    pythonRequirements: list[str] | None = None
    pythonRequirementsPath: str | None = None


class ContainerResources(Strict):
    cpu: float | None = Field(None, gt=0)
    memory: int | None = Field(None, ge=1, description="MB")


class ContainerSpec(Strict):
    image: str
    script: str | None = Field(None, description="a shell line: run as sh -c")
    command: str | list[str] | None = Field(None, description="the command: a string (split by a shell) or a list")
    args: list[str] | None = None
    port: int | None = Field(None, ge=1, le=65535, description="the port the container serves on")
    env: list[EnvVar] = Field(default_factory=list)
    health_check: HealthCheck | None = None
    prepare: Prepare | None = None
    resources: ContainerResources | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not IMAGE_RE.fullmatch(v):
            raise ValueError(f"image {v!r} is not an image reference such as registry/name:tag")
        return v

    @model_validator(mode="after")
    def _start(self) -> ContainerSpec:
        if self.script is not None and self.command is not None:
            raise ValueError("give 'script' (a shell line) or 'command', not both")
        names = [e.name for e in self.env]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"env names {', '.join(dup)} given more than once")
        return self

    def argv(self) -> list[str]:
        """What the runtime runs after the image name (empty: the image's own entrypoint)."""
        if self.script is not None:
            return ["sh", "-c", self.script]
        if isinstance(self.command, str):
            return ["sh", "-c", self.command + "".join(f" {a}" for a in self.args or [])]
        return [*(self.command or []), *(self.args or [])]


def check_containers(containers: list[ContainerSpec], with_processor: bool) -> None:
    """The serving container (the first, without a processor) must say which port it serves."""
    if not containers:
        raise ValueError("containers is empty: name at least one image, or leave the field out")
    if not with_processor and containers[0].port is None:
        raise ValueError("containers[0].port: the serving container must say which port it listens on")
    if with_processor:
        return
    ports = [c.port for c in containers if c.port is not None]
    if len(ports) != len(set(ports)):
        raise ValueError("containers: two containers of one instance cannot serve the same port")


def check_docker_auth(v: str | None) -> str | None:
    """`dockerAuth`: base64 of "user:password" for a private registry."""
    if v is None:
        return None
    try:
        user, sep, _ = base64.b64decode(v, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("dockerAuth must be base64 of 'user:password' (echo -n user:password | base64)") from None
    if not sep or not user:
        raise ValueError("dockerAuth must be base64 of 'user:password' (echo -n user:password | base64)")
    return v
