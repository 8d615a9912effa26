"""The whole EAS service-JSON schema: real EAS files validate, inert fields are kept and
named, unknown keys are still refused by name, `desc` output round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eas import spec as specs
from eas.sources import redact_data, unredacted

FIXTURES = Path(__file__).resolve().parents[1] / "e2e" / "fixtures"


def new_style(**extra: object) -> dict:
    """The current public EAS form: the name in metadata, cloud, labels, storage."""
    return {
        "metadata": {"name": "demo", "instance": 1, "workspace_id": "ws-123", "cpu": 2, "memory": 4000},
        "cloud": {"computing": {"instances": [{"type": "ecs.c7a.large"}]},
                  "networking": {"vpc_id": "vpc-1", "vswitch_id": "vsw-1", "security_group_id": "sg-1"}},
        "labels": {"team": "search", "env": "prod"},
        "storage": [{"mount_path": "/mnt/data/", "nfs": {"path": "/srv/data", "readOnly": True}},
                    {"mount_path": "/mnt/code", "git": {"repo": "file:///srv/repo.git", "branch": "main"}}],
        "processor_type": "python", "processor_path": "/mnt/code",
        **extra,
    }


def test_the_seed_examples_validate_as_they_are() -> None:
    create = specs.parse((FIXTURES / "mnist_saved_model_example.json").read_text())
    assert create.name == "mnist_saved_model_example" and create.generate_token is True
    assert create.processor == "tensorflow_cpu_1.12"
    described = specs.parse((FIXTURES / "mnist_saved_model_example_desc.json").read_text())
    assert described.metadata.region == "cn-shanghai" and described.generate_token is False
    assert described.kept_fields() == []  # region is stored and shown, not an inert field


def test_new_style_json_names_the_service_in_metadata() -> None:
    s = specs.parse(new_style())
    assert s.name == "demo" and s.metadata.workspace_id == "ws-123" and s.labels == {"team": "search", "env": "prod"}
    assert [m.kind for m in s.storage or []] == ["nfs", "git"]
    assert specs.parse({**new_style(), "name": "demo"}).name == "demo"
    with pytest.raises(specs.SpecError, match="name 'other' and metadata.name 'demo' differ"):
        specs.parse({**new_style(), "name": "other"})
    missing = {k: v for k, v in new_style().items()}
    missing["metadata"] = {"instance": 1}
    with pytest.raises(specs.SpecError) as err:
        specs.parse(missing)
    assert ("name", "required field is missing (the top-level name, or metadata.name)") in err.value.problems


def test_inert_fields_are_kept_shown_and_named() -> None:
    s = specs.parse(new_style(features={"eas.aliyun.com/extra-ephemeral-storage": "100Gi"},
                              networking={"disable_internet_endpoint": True}, dockerAuth="dXNlcjpwYXNz",
                              unit={"size": 2}, runtime={"enable_crash_block": False}))
    s = specs.parse({**s.to_dict(), "metadata": {**s.to_dict()["metadata"], "type": "LLMGatewayService",
                                                 "enable_webservice": True, "rpc": {"enable_sigterm": True}}})
    assert s.kept_fields() == [
        "cloud.computing.instances", "cloud.networking.security_group_id", "cloud.networking.vpc_id",
        "cloud.networking.vswitch_id", "features", "metadata.enable_webservice",
        "metadata.rpc.enable_sigterm", "metadata.type", "networking.disable_internet_endpoint",
        "runtime.enable_crash_block", "unit.size"]
    assert specs.kept_message(["cloud.computing.instance_type"]) == \
        "kept, no effect here: cloud.computing.instance_type"
    shown = s.to_dict()
    assert shown["cloud"]["networking"]["vpc_id"] == "vpc-1" and shown["features"]
    # EAS's defaults are not news: enable_webservice false is not named.
    assert specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1,
                                                                         "enable_webservice": False}}).kept_fields() == []


def test_autoscaler_metrics_of_eas_are_accepted_but_only_measured_ones_act() -> None:
    s = specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1},
                     "autoscaler": {"min": 1, "max": 4, "scaleStrategies": [
                         {"metricName": "qps", "threshold": 10},
                         {"metricName": "queue[backlog]", "threshold": 5, "service": "a_queue"}]}})
    assert s.kept_fields() == ["autoscaler.scaleStrategies[1].metricName=queue[backlog]"]
    with pytest.raises(specs.SpecError) as err:
        specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1},
                     "autoscaler": {"max": 2, "scaleStrategies": [{"metricName": "qpx", "threshold": 1}]}})
    assert err.value.problems[0][0] == "autoscaler.scaleStrategies.0.metricName"


@pytest.mark.parametrize("data, field", [
    ({**new_style(), "metdata": {}}, "metdata"),
    ({**new_style(), "cloud": {"computing": {"instance_typo": "x"}}}, "cloud.computing.instance_typo"),
    ({**new_style(), "storage": [{"mount_path": "/mnt/a", "oss": {"path": "oss://b/p/", "readonly": True}}]},
     "storage.0.oss.readonly"),
    ({**new_style(), "metadata": {"name": "demo", "instance": 1, "rpc": {"enable_sigterms": True}}},
     "metadata.rpc.enable_sigterms"),
    ({**new_style(), "labels": {"team": 1}}, "labels.team"),
])
def test_a_truly_unknown_or_malformed_key_is_refused_by_name(data: dict, field: str) -> None:
    with pytest.raises(specs.SpecError) as err:
        specs.parse(data)
    assert any(f == field for f, _ in err.value.problems), err.value.problems


@pytest.mark.parametrize("storage, words", [
    ([{"mount_path": "/mnt/a"}], "give exactly one of oss, nfs, git, empty_dir, image"),
    ([{"mount_path": "/mnt/a", "nfs": {"path": "/x"}, "git": {"repo": "file:///r"}}], "(got nfs, git)"),
    ([{"mount_path": "mnt/a", "nfs": {"path": "/x"}}], "must be an absolute path"),
    ([{"mount_path": "/mnt/../etc", "nfs": {"path": "/x"}}], "without '..'"),
    ([{"mount_path": "/mnt/a", "oss": {"path": "/not/an/object"}}], "is not an object path"),
    ([{"mount_path": "/mnt/a", "nfs": {"path": "/x"}}, {"mount_path": "/mnt/a/", "nfs": {"path": "/y"}}],
     "mount_path /mnt/a is used twice"),
])
def test_storage_entries_are_checked(storage: list, words: str) -> None:
    with pytest.raises(specs.SpecError, match=None) as err:
        specs.parse({**new_style(), "storage": storage})
    assert words in str(err.value)


def test_desc_output_round_trips() -> None:
    s = specs.parse(new_style(features={"x": "y"}, metadata={"name": "demo", "instance": 2, "group": "recs",
                                                             "qos": "BestEffort", "gpu_memory": 8,
                                                             "rpc": {"decompressor": "zlib"}}))
    shown = json.loads(json.dumps(redact_data(s.to_dict()), sort_keys=True))  # what desc's ServiceConfig holds
    again = specs.parse(shown)
    assert again.to_dict() == s.to_dict() and again.code_version() == s.code_version()


def test_the_decompressor_of_another_issue_is_still_validated() -> None:
    assert specs.parse({"name": "a", "processor": "onnx",
                        "metadata": {"instance": 1, "rpc": {"decompressor": "Zlib"}}}).metadata.rpc.decompressor == "zlib"
    with pytest.raises(specs.SpecError) as err:
        specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1, "rpc": {"decompressor": "rar"}}})
    assert err.value.problems[0][0] == "metadata.rpc.decompressor"


def test_labels_names_and_kept_fields_do_not_restart_instances() -> None:
    base = specs.parse(new_style())
    moved = specs.parse(new_style(labels={"team": "ads"}, metadata={"name": "demo", "instance": 1, "cpu": 2,
                                                                    "memory": 4000, "workspace_id": "ws-9",
                                                                    "group": "g", "type": "x"},
                                  cloud={"computing": {"instance_type": "ecs.gn6i"}}))
    assert moved.code_version() == base.code_version()
    assert specs.parse(new_style(storage=[])).code_version() != base.code_version()


def test_containers_are_a_service_without_a_processor() -> None:
    s = specs.parse({"name": "a", "metadata": {"instance": 1}, "containers": [{"image": "x", "port": 8000}]})
    assert s.serving_container is not None and s.serving_container.port == 8000


def test_credentials_in_mounts_are_masked_in_desc_and_kept_on_modify() -> None:
    stored = {"name": "a", "dockerAuth": "dXNlcjpwYXNz",
              "storage": [{"mount_path": "/mnt/c", "git": {"repo": "https://u:p@example.com/r.git",
                                                         "password": "s3cret"}}]}
    shown = redact_data(stored)
    assert shown["dockerAuth"] == "***" and shown["storage"][0]["git"]["password"] == "***"
    assert shown["storage"][0]["git"]["repo"] == "https://***@example.com/r.git"
    assert unredacted(shown, stored) == stored
    changed = {**shown, "storage": [{"mount_path": "/mnt/c", "git": {"repo": "https://example.com/new.git",
                                                                   "password": "***"}}]}
    assert unredacted(changed, stored)["storage"][0]["git"] == {"repo": "https://example.com/new.git",
                                                                 "password": "s3cret"}
