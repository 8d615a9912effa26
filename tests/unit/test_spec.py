"""Service JSON validation: EAS defaults, clear errors naming the field, merges."""

from __future__ import annotations

import pytest

from eas import spec as specs


def base(**extra):
    return {"name": "svc", "processor": "sklearn", "model_path": "/m", "metadata": {"instance": 1}, **extra}


def test_defaults_follow_eas():
    s = specs.parse(base())
    rpc = s.metadata.rpc
    assert (rpc.keepalive, rpc.max_queue_size, rpc.max_batch_size, rpc.max_batch_timeout) == (5000, 64, 16, 50)
    assert rpc.batching is False and s.metadata.workers == 5 and s.metadata.concurrency == 5


def test_strings_are_coerced_like_eas_accepts_them():
    s = specs.parse(base(metadata={"instance": "3", "rpc": {"batching": "true", "worker_threads": "8"}}))
    assert s.metadata.instance == 3 and s.metadata.rpc.batching is True
    assert s.metadata.concurrency == 8, "explicit rpc.worker_threads wins over workers"


@pytest.mark.parametrize(
    "data, field, words",
    [
        (base(metdata={}), "metdata", "unknown field"),
        (base(metadata={"instance": 1, "rpc": {"keepalve": 1}}), "metadata.rpc.keepalve", "unknown field"),
        (base(metadata={"instance": -1}), "metadata.instance", "greater than or equal"),
        (base(metadata={}), "metadata.instance", "required"),
        ({**base(), "name": "Has-Dash"}, "name", "lower-case"),
        ({"name": "x", "metadata": {"instance": 1}}, "", "processor"),
        (base(processor=None, processor_type="python"), "", "processor_path"),
        (base(processor_type="java"), "", "not supported"),
        (base(token="short"), "token", "8 characters"),
    ],
)
def test_errors_name_the_field_and_reason(data, field, words):
    with pytest.raises(specs.SpecError) as err:
        specs.parse(data)
    text = str(err.value)
    assert words in text
    if field:
        assert any(f == field for f, _ in err.value.problems), err.value.problems


def test_json_and_yaml_text():
    assert specs.parse('{"name": "a1", "processor": "onnx", "metadata": {"instance": 2}}').metadata.instance == 2
    assert specs.parse("name: a2\nprocessor: onnx\nmetadata:\n  instance: 1\n").name == "a2"
    with pytest.raises(specs.SpecError, match="line 1 column"):
        specs.parse('{"name": "a3",')
    with pytest.raises(specs.SpecError, match="JSON object"):
        specs.parse("[1, 2]")


def test_code_version_ignores_instances_and_token_only():
    a = specs.parse(base())
    assert specs.parse(base(metadata={"instance": 4})).code_version() == a.code_version()
    assert specs.parse(base(token="another-token")).code_version() == a.code_version()
    assert specs.parse(base(model_path="/other")).code_version() != a.code_version()
    assert specs.parse(base(metadata={"instance": 1, "cpu": 2})).code_version() != a.code_version()


def test_merge_is_deep_and_leaves_inputs_alone():
    full = base(metadata={"instance": 1, "rpc": {"keepalive": 100}})
    merged = specs.merge(full, {"metadata": {"instance": 3}})
    assert merged["metadata"] == {"instance": 3, "rpc": {"keepalive": 100}}
    assert full["metadata"]["instance"] == 1
