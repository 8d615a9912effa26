"""GPU honesty: a service that asks for a GPU runs on one, or is told why it cannot.

A service asks for a GPU with `metadata.gpu` (whole cards), `metadata.gpu_memory` (a
share of a card, by memory) or a GPU processor code (`tensorflow_gpu_1.15`,
`pytorch_gpu_1.10`). On a Ray cluster without GPUs, Serve would leave such instances
pending forever, or a GPU code would quietly run on CPU; instead the service fails at
once saying so. With `eas-server --allow-cpu-fallback` it runs on CPU and an event
says that it does. Where GPUs exist, the backend asks Ray for them
(eas/backend/ray_serve.py) and the processors place the model on the instance's GPU.
"""

from __future__ import annotations

import re
from typing import Callable

from eas.spec import ServiceSpec

_GPU_CODE = re.compile(r"_gpu(_|$)")


def gpu_code(processor: str | None) -> bool:
    """An EAS processor code that names a GPU build (`*_gpu_*`)."""
    return bool(processor and _GPU_CODE.search(processor.strip().lower()))


def asked(spec: ServiceSpec) -> str | None:
    """What in the spec asks for a GPU, in the user's words; None when nothing does."""
    meta = spec.metadata
    if meta.gpu:
        return f"metadata.gpu is {meta.gpu}"
    if meta.gpu_memory:
        return f"metadata.gpu_memory is {meta.gpu_memory} GB"
    if gpu_code(spec.processor):
        return f"processor {spec.processor} is a GPU processor"
    return None


def place(spec: ServiceSpec, cluster_gpus: Callable[[], float], allow_cpu_fallback: bool) -> tuple[ServiceSpec, str | None]:
    """The spec to deploy and an event to record (None: nothing to say).

    Raises ValueError (the service's Failed reason) when the cluster cannot give each
    instance the GPUs it asks for and CPU fallback is not allowed.
    """
    why = asked(spec)
    if why is None:
        return spec, None
    have = cluster_gpus()
    if have > 0:
        if spec.metadata.gpu > have:
            raise ValueError(f"{why} per instance, but the Ray cluster has {have:g} GPUs in all")
        if not spec.metadata.wants_gpu:  # a GPU code alone: the instance needs a GPU to run it on
            meta = spec.metadata.model_copy(update={"gpu": 1})
            return spec.model_copy(update={"metadata": meta}), f"{why}: each instance gets 1 GPU (metadata.gpu 1)"
        return spec, None
    if not allow_cpu_fallback:
        raise ValueError(f"{why}, but the Ray cluster has no GPU: add a GPU node, or start eas-server with "
                         "--allow-cpu-fallback to run it on CPU")
    meta = spec.metadata.model_copy(update={"gpu": 0, "gpu_memory": None})
    return (spec.model_copy(update={"metadata": meta}),
            f"{why}, but the Ray cluster has no GPU: running on CPU (eas-server --allow-cpu-fallback)")
