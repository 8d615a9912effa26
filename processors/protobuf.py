"""Protobuf message classes from a compiled descriptor set, in a private pool.

Each folder of .proto files in the repository is compiled by `make protos` into one
FileDescriptorSet (a committed `descriptors.binpb` beside them), and code gets its
message classes from it with `load`: no generated `_pb2` modules, which would pin a
protobuf runtime. Each set is loaded into a pool of its own, never the default one:
the official eas-prediction SDK and tritonclient register messages with the very
same names (`ArrayProto`, `inference.ModelInferRequest`, ...) in the default pool,
and they run in one process with this code.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper


def load(path: Traversable | Path) -> dict[str, Any]:
    """Read the FileDescriptorSet at `path` into a new pool.

    Returns every top-level definition by full name ("ArrayProto",
    "pytorch.eas.PredictRequest", "inference.GRPCInferenceService"): message classes
    (nested messages are attributes of their parent's class), enum wrappers (`Name`,
    `Value`, and each value as an attribute) and service descriptors.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    out: dict[str, Any] = {}
    for fd in files:  # protoc writes each file after the files it imports
        pool.Add(fd)
    for fd in files:
        prefix = f"{fd.package}." if fd.package else ""
        for m in fd.message_type:
            out[prefix + m.name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(prefix + m.name))
        for e in fd.enum_type:
            out[prefix + e.name] = enum_type_wrapper.EnumTypeWrapper(pool.FindEnumTypeByName(prefix + e.name))
        for s in fd.service:
            out[prefix + s.name] = pool.FindServiceByName(prefix + s.name)
    return out
