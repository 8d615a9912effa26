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
