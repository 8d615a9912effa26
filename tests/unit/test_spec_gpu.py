"""GPU honesty: asking for a GPU where there is none fails with the reason, or runs on
CPU with an event under --allow-cpu-fallback; `gpu` / `gpu_memory` / `qos` become the
right Ray actor options.

There is no GPU on the machines these tests run on: the refusal, the fallback event and
the resource mapping (pure) are what can be checked; the in-memory backend stands in
for Ray (the only stand-in) and reports the cluster's GPUs as the test sets them.
"""

from __future__ import annotations

import pytest

from eas import spec as specs
from eas.backend.ray_serve import ray_resources
from eas.control import gpu
from tests.support.platform import Harness, api_fixture  # noqa: F401 - registers the `api` fixture


def spec(**meta: object) -> specs.ServiceSpec:
    processor = str(meta.pop("processor", "onnx"))
    return specs.parse({"name": "g", "processor": processor, "metadata": {"instance": 1, **meta}})


def test_gpu_requests_are_read_from_every_place_eas_puts_them() -> None:
    assert gpu.asked(spec()) is None
    assert gpu.asked(spec(gpu=2)) == "metadata.gpu is 2"
    assert gpu.asked(spec(gpu_memory=8)) == "metadata.gpu_memory is 8 GB"
    assert gpu.asked(spec(processor="tensorflow_gpu_1.15")) == "processor tensorflow_gpu_1.15 is a GPU processor"
    assert not gpu.gpu_code("tensorflow_cpu_1.15") and gpu.gpu_code("pytorch_gpu_1.10")


def test_no_gpu_in_the_cluster_fails_or_falls_back_to_cpu() -> None:
    with pytest.raises(ValueError, match=r"metadata.gpu is 1, but the Ray cluster has no GPU: add a GPU node, "
                                         r"or start eas-server with --allow-cpu-fallback"):
        gpu.place(spec(gpu=1), lambda: 0.0, allow_cpu_fallback=False)
    placed, note = gpu.place(spec(gpu=1, gpu_memory=8), lambda: 0.0, allow_cpu_fallback=True)
    assert (placed.metadata.gpu, placed.metadata.gpu_memory) == (0, None)
    assert note == ("metadata.gpu is 1, but the Ray cluster has no GPU: running on CPU "
                    "(eas-server --allow-cpu-fallback)")
    with pytest.raises(ValueError, match="metadata.gpu is 4 per instance, but the Ray cluster has 2 GPUs in all"):
        gpu.place(spec(gpu=4), lambda: 2.0, allow_cpu_fallback=True)
    asked = spec(gpu=1)
    assert gpu.place(asked, lambda: 2.0, allow_cpu_fallback=False) == (asked, None)
    never = spec()
    assert gpu.place(never, lambda: pytest.fail("not asked for a CPU service"), False) == (never, None)
    coded, note = gpu.place(spec(processor="tensorflow_gpu_1.15"), lambda: 1.0, allow_cpu_fallback=False)
    assert coded.metadata.gpu == 1 and note == ("processor tensorflow_gpu_1.15 is a GPU processor: each instance "
                                                "gets 1 GPU (metadata.gpu 1)")


def test_eas_resources_map_to_ray_actor_options() -> None:
    assert ray_resources(spec(cpu=2, memory=4000).metadata) == {"num_cpus": 2, "memory": 4000 * 1024 * 1024}
    assert ray_resources(spec(gpu=2).metadata)["num_gpus"] == 2
    # gpu_memory: a share of one card, so Ray packs several instances on it.
    shared = ray_resources(spec(gpu_memory=4, qos="BestEffort", cpu=4).metadata, card_gb=16)
    assert shared == {"num_cpus": 0, "num_gpus": 0.25}, "BestEffort reserves no CPU; 4 of 16 GB is a quarter"
    assert ray_resources(spec(gpu_memory=40).metadata, card_gb=16)["num_gpus"] == 1.0
    assert ray_resources(spec(gpu=1, gpu_memory=4).metadata)["num_gpus"] == 1, "a whole card ignores gpu_memory"
    assert ray_resources(spec(resource="eas-r-123").metadata)["resources"] == {"eas-r-123": 0.001}


def test_the_controller_fails_a_gpu_service_on_a_cluster_without_one(api: Harness) -> None:
    api.create({"name": "vision", "processor": "pytorch_gpu_1.10", "metadata": {"instance": 1, "gpu": 1}})
    api.reconcile_until(lambda: api.status("vision") == "Failed", "vision to fail")
    assert api.describe("vision")["Message"] == (
        "metadata.gpu is 1, but the Ray cluster has no GPU: add a GPU node, or start eas-server with "
        "--allow-cpu-fallback to run it on CPU")
    assert not api.cluster.calls


def test_with_cpu_fallback_it_runs_on_cpu_and_says_so(api: Harness) -> None:
    api.controller.allow_cpu_fallback = True
    api.create({"name": "vision", "processor": "pytorch_gpu_1.10", "metadata": {"instance": 1}})
    api.reconcile_until(lambda: api.status("vision") == "Running", "vision to run")
    events = [e["Message"] for e in api.ok("GET", api.svc("vision", "/events"))["Events"]]
    assert ("processor pytorch_gpu_1.10 is a GPU processor, but the Ray cluster has no GPU: running on CPU "
            "(eas-server --allow-cpu-fallback)") in events


def test_where_gpus_exist_the_service_gets_them(api: Harness) -> None:
    api.cluster.gpus = 2.0
    api.create({"name": "vision", "processor": "onnx", "metadata": {"instance": 1, "gpu": 1}})
    api.reconcile_until(lambda: api.status("vision") == "Running", "vision to run")
    assert [c[0] for c in api.cluster.calls] == ["deploy"]
