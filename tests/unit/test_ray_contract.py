"""The Ray internals eas/backend/ relies on still exist: a Ray upgrade fails here in seconds
rather than in the end-to-end tests minutes later.

Ray is pinned (pyproject.toml); these are private APIs it may change in any release.
Nothing is started: the check is on the installed package only.
"""

from __future__ import annotations

import inspect

import pytest

ray = pytest.importorskip("ray")


def test_serve_private_apis_used_by_the_backend_exist() -> None:
    from ray import serve
    from ray.experimental import internal_kv
    from ray.serve.context import _get_global_client

    assert callable(_get_global_client)
    run = inspect.signature(serve._run)
    assert {"name", "route_prefix", "_blocking"} <= set(run.parameters)
    assert "_blocking" in inspect.signature(serve.delete).parameters
    for name in ("_internal_kv_put", "_internal_kv_get", "_internal_kv_del", "_internal_kv_list"):
        params = inspect.signature(getattr(internal_kv, name)).parameters
        assert "namespace" in params, name
    assert callable(serve.get_replica_context)


def test_deployment_options_the_backend_sets_exist() -> None:
    from ray import serve

    @serve.deployment
    class Probe:
        pass

    options = inspect.signature(Probe.options).parameters
    for name in ("version", "max_surge_percent", "max_constructor_retry_count", "num_replicas",
                 "max_ongoing_requests", "ray_actor_options", "user_config", "health_check_period_s",
                 "graceful_shutdown_timeout_s", "_internal"):
        assert name in options, name
    deployment = Probe.options(version="v1", max_surge_percent=100, _internal=True)
    assert hasattr(deployment._deployment_config, "rolling_update_percentage")


def test_the_serve_controller_reports_instance_details() -> None:
    from ray.serve._private.controller import ServeController

    # Called as a remote method by RayBackend.observe.
    assert hasattr(ServeController, "get_serve_instance_details")


def test_what_the_log_reader_uses_exists(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """RayBackend.logs reads `worker-<id>-<job>-<pid>.out/.err` in the node's log dir,
    found through the worker's Node; elsewhere it pins a task with NodeAffinity."""
    from ray._private import worker
    from ray._private.node import Node
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from eas.backend import ray_serve

    assert hasattr(worker, "global_worker") and callable(Node.get_logs_dir_path)
    assert "node_ip_address" in dir(Node) and "soft" in inspect.signature(NodeAffinitySchedulingStrategy).parameters

    class FakeNode:
        @staticmethod
        def get_logs_dir_path() -> str:
            return str(tmp_path)

    monkeypatch.setattr(worker.global_worker, "node", FakeNode(), raising=False)
    (tmp_path / "worker-aa-01000000-42.out").write_text(":job_id:01000000\n:actor_name:ServeReplica:x\nready\nout 2\n")
    (tmp_path / "worker-aa-01000000-42.err").write_text(":actor_name:ServeReplica:x\nwarn\n")
    (tmp_path / "worker-bb-01000000-420.out").write_text("another process\n")
    assert ray_serve.worker_log_lines(42, 10) == ["ready", "out 2", "warn"]
    assert ray_serve.worker_log_lines(42, 1) == ["out 2", "warn"], "the last lines of each"
    assert ray_serve.worker_log_lines(7, 10) is None, "no files: not on this node"
