"""Every request type the official SDKs build, on the processors that parse protobuf:
eas-prediction's OnnxRequest on the onnx processor (answered as an OnnxResponse), and
a request meant for another processor (TorchRequest, EasyRecRequest, TorchRecRequest)
answered with a 400 that names the processor it needs.

The bodies are wire bytes recorded from eas-prediction 0.36 (it needs protobuf<=3.20.3,
so it cannot run in this venv; tests/sdk drives it for real).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from processors import ModelContext, ProcessorError, Request, onnxproto, sdkrequests
from processors.onnx import OnnxProcessor

#: eas-prediction 0.36, recorded: what each request class serialises.
SDK_BODIES = {
    # TFRequest("serving_default"), feed x [2,3] DT_FLOAT 1..6, fetch y
    "TFRequest": "0a0f73657276696e675f64656661756c7412270a01781222080112040a0202031a180000803f00000040"
                 "00004040000080400000a0400000c0401a0179",
    # TorchRequest(), feed 0 [2,3] DT_FLOAT 1..6
    "TorchRequest": "0a22080112040a0202031a180000803f0000004000004040000080400000a0400000c040",
    # OnnxRequest(), add_tensor(from_array(float32 [[0,1,2],[3,4,5]], "x"))
    "OnnxRequest": "0a230a01781202020318012a18000000000000803f0000004000004040000080400000a040",
    # EasyRecRequest(): user features age=3 (int), city="hz", w=0.5 (float); item_ids 1, 2
    "EasyRecRequest": "12090a0361676512020803120c0a046369747912041a02687a120a0a01771205250000003f1a01311a0132",
    # EasyRecRequest(): int and string features only (also reads cleanly as a TF PredictRequest)
    "EasyRecRequest, no float": "12090a036167651202080312120a0463697479120a1a0868616e677a686f751a0131",
    # TorchRecRequest(): debug_level 1, user feature age=3, item_ids 7
    "TorchRecRequest": "080112090a03616765120208031a0137",
}


def body(name: str) -> bytes:
    return bytes.fromhex(SDK_BODIES[name])


@pytest.mark.parametrize("name, kind", [
    ("TFRequest", "TFRequest"), ("TorchRequest", "TorchRequest"), ("OnnxRequest", "OnnxRequest"),
    ("EasyRecRequest", "EasyRecRequest or TorchRecRequest"),
    ("EasyRecRequest, no float", "EasyRecRequest or TorchRecRequest"),
    ("TorchRecRequest", "EasyRecRequest or TorchRecRequest"),
])
def test_each_sdk_request_is_told_apart(name: str, kind: str) -> None:
    assert sdkrequests.kind_of(body(name)) == kind


def test_bytes_of_no_sdk_request_are_none() -> None:
    for junk in (b"\x08not a protobuf", b"\xff\xff\xff", b"", b'{"instances": [1]}'):
        assert sdkrequests.kind_of(junk) is None


@pytest.fixture(scope="module")
def doubler(tmp_path_factory: pytest.TempPathFactory) -> OnnxProcessor:
    """y = x + x on float [N, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    root: Path = tmp_path_factory.mktemp("double")
    (root / "model.onnx").write_bytes(model.SerializeToString())
    processor = OnnxProcessor(ModelContext(model_dir=str(root)))
    processor.load()
    return processor


def test_an_onnx_request_is_answered_as_an_onnx_response(doubler: OnnxProcessor) -> None:
    response = doubler.predict(Request(body("OnnxRequest"), content_type="application/octet-stream"))
    assert response.status == 200
    answer = onnxproto.DataProto.FromString(response.body)
    [tensor] = answer.tensors
    assert (tensor.name, list(tensor.dims), tensor.data_type) == ("y", [2, 3], 1)
    np.testing.assert_array_equal(onnxproto.array_from_tensor(tensor, "y"),
                                  np.arange(6, dtype=np.float32).reshape(2, 3) * 2)


def test_a_bad_onnx_request_is_a_clear_400(doubler: OnnxProcessor) -> None:
    def refused(tensor: object) -> str:
        message = onnxproto.DataProto()
        message.tensors.add().CopyFrom(tensor)
        with pytest.raises(ProcessorError) as info:
            doubler.predict(Request(message.SerializeToString()))
        assert info.value.status == 400
        return info.value.message

    short = onnxproto.TensorProto(name="x", dims=[2, 3], data_type=1, raw_data=b"\0" * 20)
    assert "need 24 bytes of raw_data, received 20" in refused(short)
    narrow = onnxproto.TensorProto(name="x", dims=[2, 2], data_type=1, raw_data=b"\0" * 16)
    assert "input 'x'" in refused(narrow)
    unknown = onnxproto.TensorProto(name="z", dims=[1, 3], data_type=1, raw_data=b"\0" * 12)
    assert "unknown input 'z'" in refused(unknown)


@pytest.mark.parametrize("name, needs", [
    ("TorchRequest", "the pytorch processor"),
    ("EasyRecRequest", "easyrec or torchrec"),
    ("EasyRecRequest, no float", "easyrec or torchrec"),
    ("TorchRecRequest", "easyrec or torchrec"),
])
def test_a_request_for_another_processor_names_it(doubler: OnnxProcessor, name: str, needs: str) -> None:
    with pytest.raises(ProcessorError) as info:
        doubler.predict(Request(body(name), content_type="application/octet-stream"))
    assert info.value.status == 400
    assert needs in info.value.message and "this onnx service takes JSON or TFRequest or OnnxRequest" \
        in info.value.message, info.value.message


def test_a_tf_request_is_still_a_tf_request(doubler: OnnxProcessor) -> None:
    """A TFRequest is what the onnx processor takes first: answered as a TF PredictResponse,
    and a wrong one keeps its own error, about its inputs."""
    from processors import tfproto

    answer = tfproto.PredictResponse.FromString(doubler.predict(Request(body("TFRequest"))).body)
    assert list(answer.outputs) == ["y"]
    wrong = tfproto.PredictRequest(signature_name="serving_default")
    wrong.inputs["x"].CopyFrom(tfproto.array_to_proto(np.zeros((2, 2), dtype=np.float32)))
    with pytest.raises(ProcessorError) as info:
        doubler.predict(Request(wrong.SerializeToString()))
    assert "official EAS SDK" not in info.value.message and "input 'x'" in info.value.message, info.value.message
