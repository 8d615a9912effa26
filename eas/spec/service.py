"""The EAS service description as typed models, with EAS's defaults.

The service JSON is the user's contract with us (docs/service-json.md). Validation
happens at the edge (eas/spec/document.py parses text into these models), so everything
behind it can trust a `ServiceSpec`. Unknown fields are refused by name: a typo such as
`metdata` must not silently deploy a service with default settings. Every field of EAS's
public reference is accepted: what has a meaning on a Ray cluster acts, the rest is
declared `kept()` (eas/spec/base.py) and named once to the user (eas/spec/kept.py).
Both forms of the name are read: the classic top-level `name` and the current
`metadata.name`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from eas.spec.base import Strict as _Strict
from eas.spec.base import kept
from eas.spec.bml import BackflowSpec, BmlSpec
from eas.spec.cloud import CloudSpec, NetworkingSpec, RuntimeSpec, UnitSpec
from eas.spec.container import ContainerSpec, check_containers, check_docker_auth
from eas.spec.elastic import AutoscalerSpec, CronScalerSpec, SleepSpec
from eas.spec.kept import kept_fields
from eas.spec.queue import QueueSpec
from eas.spec.storage import StorageSpec, check_unique

#: A service or group name, matched whole: `\Z`, not `$` (which also matches before a
#: trailing newline, so "svc\n" would pass); use `fullmatch`.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")


class RpcConfig(_Strict):
    batching: bool = False
    max_batch_size: int = Field(16, ge=1, le=4096)
    max_batch_timeout: int = Field(50, ge=0, description="ms")
    keepalive: int = Field(5000, ge=1, description="ms a request may run before 408")
    io_threads: int = Field(4, ge=1, le=256)
    max_queue_size: int = Field(64, ge=1)
    worker_threads: int = Field(5, ge=1, le=1024)
    rate_limit: int | None = Field(None, ge=1, description="QPS per service")
    retry_in_flight: bool | None = Field(
        None, description="retry once on another instance a request whose instance died while running it; "
        "default: on for built-in processors (pure predictions), off for user code and containers")
    decompressor: str | None = Field(None, description="codec of compressed predict bodies (the SDKs' compressors)")
    enable_sigterm: bool = kept(False, description="instances here always drain and stop gracefully")

    @field_validator("decompressor", mode="before")
    @classmethod
    def _decompressor(cls, v: Any) -> Any:
        # The codecs of eas/protocols/compression.py CODECS (a sibling layer: the list is
        # repeated here, and tests/unit/test_compression.py checks the two agree).
        codecs = ("gzip", "zlib", "snappy", "lz4", "zstd")
        if v is None:
            return None
        if not isinstance(v, str) or v.strip().lower() not in codecs:
            raise ValueError(f"decompressor {v!r} is not supported: use one of {', '.join(codecs)}")
        return v.strip().lower()


class RollingStrategy(_Strict):
    max_unavailable: int | str = 1
    max_surge: int | str | None = None


class Metadata(_Strict):
    instance: int = Field(..., ge=0, le=1000)
    cpu: float = Field(1.0, gt=0)
    memory: int | None = Field(None, ge=1, description="MB")
    gpu: int = Field(0, ge=0)
    gpu_memory: int | None = Field(None, ge=0)
    workers: int = Field(5, ge=1, le=1024)
    resource: str | None = None
    warm_up_count: int = Field(5, ge=1, le=100, description="times each warm-up request is replayed")
    enable_grpc: bool = Field(False, description="a container service's containers[0].port is a gRPC server: any "
                              "method reaches it through eas-server's gRPC port (docs/containers.md); processors' "
                              "gRPC services are always served")
    enable_webservice: bool = kept(False, description="a container service gets every method and sub-path anyway")
    rpc: RpcConfig = Field(default_factory=RpcConfig)
    rolling_strategy: RollingStrategy = Field(default_factory=RollingStrategy)
    name: str | None = Field(None, description="the new-style place of the service name")
    workspace_id: str | None = None
    region: str | None = Field(None, description="as `eascmd desc` prints it back; stored and shown")
    group: str | None = Field(None, description="the service group this service joins")
    qos: Literal["", "BestEffort"] | None = Field(None, description="BestEffort: no CPU reserved")
    shm_size: int | None = Field(None, ge=1, description="GB of /dev/shm each instance needs")
    type: str | None = Field(None, description='"Async": an asynchronous service with input and sink queues '
                             "(the `queue` block); other EAS types are kept without effect")
    gpu_core_percentage: int | None = kept(None, ge=1, le=100)
    resource_burstable: bool | None = kept()
    rdma: int | None = kept(None, ge=0)
    disk: str | None = kept()
    cuda: str | None = kept()

    @field_validator("group")
    @classmethod
    def _group(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.fullmatch(v):
            raise ValueError("a group name starts with a lower-case letter and holds only lower-case letters, "
                             "digits and underscores (at most 63 characters)")
        return v

    @property
    def wants_gpu(self) -> bool:
        """Whether instances ask for a GPU: whole cards (`gpu`) or a share by memory (`gpu_memory`)."""
        return self.gpu > 0 or bool(self.gpu_memory)

    @property
    def is_async(self) -> bool:
        """An asynchronous service: requests go through its queues (docs/async.md)."""
        return (self.type or "").lower() == "async"

    @property
    def concurrency(self) -> int:
        """Requests one instance serves at once: `rpc.worker_threads` if set, else `workers`."""
        if "worker_threads" in self.rpc.model_fields_set:
            return self.rpc.worker_threads
        return self.workers


class ServiceSpec(_Strict):
    name: str = Field(..., description="or metadata.name")
    token: str | None = None
    generate_token: bool | None = None
    model_path: str | None = None
    model_sha256: str | None = Field(None, description="SHA-256 of the file model_path names, checked after download")
    oss_endpoint: str | None = None
    model_entry: str | None = None
    model_config_: Any = Field(None, alias="model_config")
    processor: str | None = None
    processor_path: str | None = None
    processor_entry: str | None = None
    processor_mainclass: str | None = None
    processor_type: Literal["python", "cpp", "java"] | None = None
    warm_up_data_path: str | None = None
    metadata: Metadata
    autoscaler: AutoscalerSpec | None = None
    cron_scaler: CronScalerSpec | None = None
    sleep: SleepSpec | None = None
    containers: list[ContainerSpec] | None = None
    storage: list[StorageSpec] | None = None
    labels: dict[str, str] | None = None
    bml: BmlSpec | None = Field(None, description="answer Baidu BML's API (eas/spec/bml.py)")
    backflow: BackflowSpec | None = Field(None, description="capture a share of requests and answers")
    cloud: CloudSpec | None = kept()
    networking: NetworkingSpec | None = kept()
    features: dict[str, Any] | None = kept()
    queue: QueueSpec | None = Field(None, description="the queues of an Async service (eas/spec/queue.py)")
    sinker: dict[str, Any] | None = kept()
    unit: UnitSpec | None = kept()
    runtime: RuntimeSpec | None = kept()
    dockerAuth: str | None = Field(None, description="base64 of user:password for a private registry")  # noqa: N815

    @model_validator(mode="before")
    @classmethod
    def _one_name(cls, data: Any) -> Any:
        """New-style JSON names the service in metadata.name only; both given must agree."""
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            return data
        inner = data["metadata"].get("name")
        if inner is None:
            return data
        outer = data.get("name")
        if outer is None:
            return {**data, "name": inner}
        if outer != inner:
            raise ValueError(f"name {outer!r} and metadata.name {inner!r} differ: give the service one name")
        return data

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if not key or len(key) > 128 or any(c.isspace() or c in "=," for c in key):
                raise ValueError(f"label key {key!r}: 1-128 characters without spaces, '=' or ','")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: list[StorageSpec] | None) -> list[StorageSpec] | None:
        if v:
            check_unique(v)
        return v

    @field_validator("dockerAuth")
    @classmethod
    def _docker_auth(cls, v: str | None) -> str | None:
        return check_docker_auth(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(
                "must start with a lower-case letter and hold only lower-case letters, "
                "digits and underscores (at most 63 characters)"
            )
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and (len(v) < 8 or any(c.isspace() for c in v)):
            raise ValueError("must be at least 8 characters with no white space")
        return v

    @field_validator("model_sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("must be a SHA-256 digest: 64 hexadecimal characters (sha256sum prints it)")
        return v.lower() if v is not None else None

    @field_validator("processor_type", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _processor(self) -> "ServiceSpec":
        if self.containers is not None:
            check_containers(self.containers, with_processor=bool(self.processor or self.processor_type))
        if self.processor_type in ("cpp", "java"):
            raise ValueError(
                f"processor_type '{self.processor_type}' is not supported: use 'python' "
                "or a built-in 'processor'"
            )
        if self.processor_type == "python":
            if not self.processor_path:
                raise ValueError("processor_type 'python' needs 'processor_path' (your code)")
        elif not self.processor and not self.containers:
            raise ValueError(
                "set 'processor' (a built-in code such as sklearn or onnx), "
                "'processor_type': 'python' with 'processor_path', or 'containers' (a custom image)"
            )
        return self

    # -- derived views -------------------------------------------------------------

    @property
    def serving_container(self) -> ContainerSpec | None:
        """The container requests go to: the first one, when no processor serves."""
        if self.containers and not (self.processor or self.processor_type):
            return self.containers[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        """The service JSON with EAS defaults filled in (what `desc` shows)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def code_version(self) -> str:
        """A digest of everything that needs new instances when it changes.

        Instance count, autoscaler, cron, sleep, token and queue changes are applied to
        running instances; anything else (model, processor, resources, rpc settings) rolls.
        """
        data = self.to_dict()
        # Names, labels and the group change what the service is called and how it is
        # found, not what runs; fields kept without effect change nothing at all.
        for path in ("token", "generate_token", "autoscaler", "backflow", "cron_scaler", "sleep", "labels", "metadata.instance",
                     "metadata.name", "metadata.workspace_id", "metadata.region", "metadata.group",
                     # Async or not, and the queue limits: the processor runs the same either way.
                     "metadata.type", "queue",
                     *kept_fields(self, every=True)):
            _drop(data, path)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def kept_fields(self) -> list[str]:
        """The EAS fields set here that have no effect on this platform (dotted paths)."""
        unmeasured = self.autoscaler.unmeasured() if self.autoscaler else []
        if self.autoscaler and not self.metadata.is_async:  # no queue of its own to measure
            unmeasured += [f"autoscaler.scaleStrategies[{i}].metricName={s.metricName}"
                           for i, s in enumerate(self.autoscaler.scaleStrategies) if s.metricName == "queue[backlog]"]
        other_type = ["metadata.type"] if self.metadata.type and not self.metadata.is_async else []
        unqueued = ["queue"] if self.queue is not None and not self.metadata.is_async else []
        return sorted(kept_fields(self) + unmeasured + other_type + unqueued)

    @property
    def queues(self) -> QueueSpec:
        """The queue settings of an Async service (EAS's defaults when no `queue` block)."""
        return self.queue or QueueSpec()

    def model_version_fields(self) -> dict[str, Any]:
        """Fields whose change makes a new service version (model or processor)."""
        keys = (
            "model_path", "model_sha256", "model_entry", "model_config", "processor", "processor_path",
            "processor_entry", "processor_mainclass", "processor_type", "warm_up_data_path", "containers",
        )
        data = self.to_dict()
        return {k: data.get(k) for k in keys}


def _drop(data: dict[str, Any], path: str) -> None:
    """Remove a dotted path (list items as `[i]`) from a dumped spec, if present."""
    *parents, last = re.split(r"\.(?![^\[]*\])", path)
    node: Any = data
    for part in parents:
        node = _step(node, part)
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(last, None)


def _step(node: Any, part: str) -> Any:
    name, _, index = part.partition("[")
    node = node.get(name) if isinstance(node, dict) else None
    if index and isinstance(node, list):
        i = int(index.rstrip("]"))
        node = node[i] if i < len(node) else None
    return node
