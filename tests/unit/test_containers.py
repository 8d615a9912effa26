"""`containers[]`: the schema's errors name the field, and what the runtime is asked to
run (pure: no runtime needed). The real runs are in tests/e2e/test_containers.py."""

from __future__ import annotations

from typing import Any

import pytest

from eas import spec as specs
from eas.instance import container
from tests.support.platform import Harness, api_fixture  # noqa: F401 - the `api` fixture


def service(**first: Any) -> dict[str, Any]:
    entry = {"image": "localhost/app:v1", "port": 8000, **first}
    return {"metadata": {"name": "web", "instance": 1, "cpu": 2, "memory": 512}, "containers": [entry],
            "cloud": {"computing": {"instance_type": "ecs.c6.large"}}}


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(specs.SpecError) as err:
        specs.parse(data)
    return err.value.problems


@pytest.mark.parametrize("first, field, words", [
    ({"image": "bad image"}, "containers.0.image", "not an image reference"),
    ({"port": 70000}, "containers.0.port", "less than or equal to 65535"),
    ({"health_check": {"http_get": {"path": "health"}}}, "containers.0.health_check.http_get.path", "start with '/'"),
    ({"health_check": {"http_get": {}, "tcp_socket": {}}}, "containers.0.health_check", "not http_get and tcp_socket"),
    ({"health_check": {"period_seconds": 0}}, "containers.0.health_check.period_seconds", "greater than or equal"),
    ({"env": [{"name": "1A", "value": "x"}]}, "containers.0.env.0.name", "not first a digit"),
    ({"env": [{"name": "A"}, {"name": "A"}]}, "containers.0", "given more than once"),
    ({"script": "x", "command": ["y"]}, "containers.0", "not both"),
    ({"entrypoint": "x"}, "containers.0.entrypoint", ""),
])
def test_errors_name_the_field(first: dict[str, Any], field: str, words: str) -> None:
    found = problems(service(**first))
    assert any(path == field and words in text for path, text in found), found


def test_the_serving_container_needs_a_port_and_docker_auth_is_base64() -> None:
    no_port = service()
    del no_port["containers"][0]["port"]
    assert any("containers[0].port" in text for _, text in problems(no_port))
    assert problems({**service(), "dockerAuth": "not base64!"})[0][0] == "dockerAuth"
    assert problems({**service(), "containers": []})[0][1].startswith("containers is empty")


def test_processor_with_containers_makes_them_sidecars() -> None:
    s = specs.parse({**service(), "processor": "sklearn", "model_path": "/m.joblib"})
    assert s.serving_container is None and s.containers and s.containers[0].image == "localhost/app:v1"


def test_image_change_is_a_new_version_and_a_rollout() -> None:
    a, b = specs.parse(service()), specs.parse(service(image="localhost/app:v2"))
    assert a.code_version() != b.code_version()
    assert a.model_version_fields() != b.model_version_fields()


def test_run_arguments_carry_limits_env_mounts_labels_and_the_port() -> None:
    s = specs.parse(service(command=["/app", "--fast"], env=[{"name": "PORT", "value": 8000}]))
    assert s.containers is not None
    args = container.run_args(s.containers[0], s, "eas-web-r1-0", {"eas.instance": "r1"}, "10.0.0.5",
                              {"/models": "/cache/m"}, None)
    joined = " ".join(args)
    for part in ("--cpus 2", "--memory 512m", "-e PORT=8000", "-v /cache/m:/models", "--label eas.instance=r1",
                 "-p 10.0.0.5::8000"):
        assert part in joined, joined
    assert args[args.index("--entrypoint") + 1] == "/app" and args[-2:] == ["localhost/app:v1", "--fast"]


def test_script_runs_in_a_shell_and_prepare_installs_first() -> None:
    s = specs.parse(service(script="python app.py", prepare={"pythonRequirements": ["flask==3.0.0"]}))
    assert s.containers is not None
    args = container.run_args(s.containers[0], s, "n", {}, "127.0.0.1", {}, None)
    assert args[args.index("--entrypoint") + 1] == "sh"
    assert args[-2:] == ["-c", "pip install --no-cache-dir flask==3.0.0 && exec sh -c 'python app.py'"]


def test_no_runtime_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = container.missing_runtime("podman")
    assert reason is not None and "apt-get install -y podman runc" in reason
    assert container.reap("someone") == []  # nothing to do, nothing raised
    with pytest.raises(Exception, match="not installed"):
        container.ContainerGroup(specs.parse(service()), "r1", "o", "127.0.0.1", {})


def test_owner_differs_per_data_directory() -> None:
    assert container.owner_of("/a/cache") != container.owner_of("/b/cache")
    assert container.owner_of("/a/cache") == container.owner_of("/a/./cache")


def test_no_runtime_on_the_node_fails_the_service_at_once(api: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller checks for the runtime before it deploys (the in-memory backend of
    tests/support/backend.py stands in for Ray; no podman is found on an empty PATH)."""
    monkeypatch.setenv("PATH", "/nonexistent")
    api.create(service())
    api.reconcile_until(lambda: api.status("web") == "Failed", "web to fail")
    message = api.describe("web")["Message"]
    assert "'podman' is not installed" in message and "apt-get install -y podman runc" in message
    assert not api.cluster.calls, "nothing was deployed"
