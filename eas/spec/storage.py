"""`storage[]`: what EAS mounts into an instance, and where (`mount_path`).

Each entry names one source: `oss` (an object-store prefix, oss:// or s3://), `nfs` (a
NAS export), `git` (a repository), `empty_dir` (a scratch directory, in memory when
`medium` is "memory"; at `/dev/shm` it sets the shared-memory size), or `image` (files
copied out of a container image). Schemas only: eas/sources/mounts.py prepares them on
each node, and model_path / processor_path may then name a path under a mount_path.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from eas.spec.base import Strict

KINDS = ("oss", "nfs", "git", "empty_dir", "image")


class OssMount(Strict):
    path: str
    readOnly: bool = False  # noqa: N815 - EAS field name

    @field_validator("path")
    @classmethod
    def _object_url(cls, v: str) -> str:
        if not v.lower().startswith(("oss://", "s3://")):
            raise ValueError(f"'{v}' is not an object path: write oss://bucket/prefix/ or s3://bucket/prefix/")
        return v


class NfsMount(Strict):
    path: str = "/"
    server: str | None = None
    readOnly: bool = False  # noqa: N815


class GitMount(Strict):
    repo: str
    branch: str | None = None
    commit: str | None = None
    username: str | None = None
    password: str | None = None


class EmptyDirMount(Strict):
    medium: Literal["", "memory"] | None = None
    size_limit: int | None = Field(None, ge=1, description="GB")

    @field_validator("medium", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v


class ImageMount(Strict):
    image: str
    path: str


class StorageSpec(Strict):
    mount_path: str
    oss: OssMount | None = None
    nfs: NfsMount | None = None
    git: GitMount | None = None
    empty_dir: EmptyDirMount | None = None
    image: ImageMount | None = None

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"'{v}' must be an absolute path without '..' (e.g. /mnt/data)")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "StorageSpec":
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"mount_path {self.mount_path}: give exactly one of {', '.join(KINDS)}"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> str:
        """The mount path, normalised (no trailing slash): what paths are matched against."""
        return posixpath.normpath(self.mount_path)


def check_unique(storage: list[StorageSpec]) -> None:
    seen: set[str] = set()
    for entry in storage:
        if entry.target in seen:
            raise ValueError(f"mount_path {entry.target} is used twice")
        seen.add(entry.target)
