"""The EAS service description as typed models, with EAS's defaults.

The service JSON is the user's contract with us (docs/service-json.md). Validation
happens at the edge (eas/spec/document.py parses text into these models), so everything
behind it can trust a `ServiceSpec`. Unknown fields are refused by name: a typo such as
`metdata` must not silently deploy a service with default settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eas.spec.elastic import AutoscalerSpec, CronScalerSpec, SleepSpec

#: A service or group name, matched whole: `\Z`, not `$` (which also matches before a
#: trailing newline, so "svc\n" would pass); use `fullmatch`.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RpcConfig(_Strict):
    batching: bool = False
    max_batch_size: int = Field(16, ge=1, le=4096)
    max_batch_timeout: int = Field(50, ge=0, description="ms")
    keepalive: int = Field(5000, ge=1, description="ms a request may run before 408")
    io_threads: int = Field(4, ge=1, le=256)
    max_queue_size: int = Field(64, ge=1)
    worker_threads: int = Field(5, ge=1, le=1024)
    rate_limit: int | None = Field(None, ge=1, description="QPS per service")


class RollingStrategy(_Strict):
    max_unavailable: int | str = 1
    max_surge: int | str | None = None


class Metadata(_Strict):
    instance: int = Field(..., ge=0, le=1000)
    cpu: float = Field(1, gt=0)
    memory: int | None = Field(None, ge=1, description="MB")
    gpu: int = Field(0, ge=0)
    gpu_memory: int | None = Field(None, ge=0)
    workers: int = Field(5, ge=1, le=1024)
    resource: str | None = None
    warm_up_count: int = Field(5, ge=1, le=100, description="times each warm-up request is replayed")
    enable_grpc: bool = False
    enable_webservice: bool = False
    rpc: RpcConfig = Field(default_factory=RpcConfig)
    rolling_strategy: RollingStrategy = Field(default_factory=RollingStrategy)

    @property
    def concurrency(self) -> int:
        """Requests one instance serves at once: `rpc.worker_threads` if set, else `workers`."""
        if "worker_threads" in self.rpc.model_fields_set:
            return self.rpc.worker_threads
        return self.workers


class ServiceSpec(_Strict):
    name: str
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
    containers: list[dict[str, Any]] | None = None

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
        if self.containers:
            raise ValueError(
                "'containers' (custom images) is not supported: use 'processor' or "
                "'processor_type': 'python' with 'processor_path'"
            )
        if self.processor_type in ("cpp", "java"):
            raise ValueError(
                f"processor_type '{self.processor_type}' is not supported: use 'python' "
                "or a built-in 'processor'"
            )
        if self.processor_type == "python":
            if not self.processor_path:
                raise ValueError("processor_type 'python' needs 'processor_path' (your code)")
        elif not self.processor:
            raise ValueError(
                "set 'processor' (a built-in code such as sklearn or onnx) or "
                "'processor_type': 'python' with 'processor_path'"
            )
        return self

    # -- derived views -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The service JSON with EAS defaults filled in (what `desc` shows)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def code_version(self) -> str:
        """A digest of everything that needs new instances when it changes.

        Instance count, autoscaler, cron, sleep and token changes are applied to running
        instances; anything else (model, processor, resources, rpc settings) rolls.
        """
        data = self.to_dict()
        data.pop("token", None)
        data.pop("generate_token", None)
        for elastic in ("autoscaler", "cron_scaler", "sleep"):
            data.pop(elastic, None)
        data["metadata"].pop("instance", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def model_version_fields(self) -> dict[str, Any]:
        """Fields whose change makes a new service version (model or processor)."""
        keys = (
            "model_path", "model_sha256", "model_entry", "model_config", "processor", "processor_path",
            "processor_entry", "processor_mainclass", "processor_type", "warm_up_data_path",
        )
        data = self.to_dict()
        return {k: data.get(k) for k in keys}
