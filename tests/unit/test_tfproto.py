"""The EAS tensor protobufs: field numbers pinned by hand-built wire bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pool

from processors import ProcessorError, tfproto, torchproto


# ---- a minimal protobuf wire encoder, so the expected bytes do not come from our schema

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """Length-delimited field (strings, bytes, messages, packed repeated)."""
    return tag(field, 2) + varint(len(payload)) + payload


def vint(field: int, value: int) -> bytes:
    return tag(field, 0) + varint(value)


def packed_varints(field: int, values: list[int]) -> bytes:
    return ld(field, b"".join(varint(v) for v in values))


def float_array_bytes(dims: list[int], values: list[float], dtype_code: int = 1) -> bytes:
    return (vint(1, dtype_code) + ld(2, packed_varints(1, dims))
            + ld(3, struct.pack(f"<{len(values)}f", *values)))


def test_tf_predict_request_wire_format() -> None:
    array = float_array_bytes([1, 2], [1.5, -2.0])
    wire = (ld(1, b"serving_default")
            + ld(2, ld(1, b"x") + ld(2, array))          # map<string, ArrayProto> inputs = 2
            + ld(3, b"y") + ld(3, b"z")                  # repeated string output_filter = 3
            + vint(100, 7))                              # debug_level = 100

    request = tfproto.PredictRequest.FromString(wire)
    assert request.signature_name == "serving_default"
    assert list(request.output_filter) == ["y", "z"]
    assert request.debug_level == 7
    x = request.inputs["x"]
    assert x.dtype == tfproto.DT_FLOAT
    assert list(x.array_shape.dim) == [1, 2]
    np.testing.assert_array_equal(tfproto.array_from_proto(x), np.array([[1.5, -2.0]], np.float32))
    assert request.SerializeToString() == wire


def test_tf_array_proto_every_value_field_number() -> None:
    wire = (vint(1, tfproto.DT_STRING)
            + ld(4, struct.pack("<d", 2.5))              # double_val = 4
            + packed_varints(5, [3])                     # int_val = 5
            + ld(6, b"abc")                              # string_val = 6
            + packed_varints(7, [2**40])                 # int64_val = 7
            + packed_varints(8, [1]))                    # bool_val = 8
    proto = tfproto.ArrayProto.FromString(wire)
    assert list(proto.double_val) == [2.5]
    assert list(proto.int_val) == [3]
    assert list(proto.string_val) == [b"abc"]
    assert list(proto.int64_val) == [2**40]
    assert list(proto.bool_val) == [True]


def test_tf_predict_response_wire_format() -> None:
    array = float_array_bytes([2], [0.25, 0.75])
    wire = ld(1, ld(1, b"probs") + ld(2, array))         # map<string, ArrayProto> outputs = 1
    response = tfproto.PredictResponse()
    response.outputs["probs"].CopyFrom(tfproto.array_to_proto(np.array([0.25, 0.75], np.float32)))
    assert response.SerializeToString() == wire
    assert tfproto.PredictResponse.FromString(wire) == response


def test_torch_messages_wire_format() -> None:
    array = float_array_bytes([3], [1.0, 2.0, 3.0])
    wire = (ld(1, array)                                  # repeated ArrayProto inputs = 1
            + packed_varints(2, [0, 2])                   # repeated int32 output_filter = 2
            + ld(3, ld(1, b"m") + ld(2, array))           # map_inputs = 3
            + vint(100, 1))                               # debug_level = 100
    request = torchproto.PredictRequest.FromString(wire)
    assert len(request.inputs) == 1 and list(request.output_filter) == [0, 2]
    assert request.debug_level == 1
    np.testing.assert_array_equal(torchproto.array_from_proto(request.map_inputs["m"]), [1, 2, 3])
    assert request.SerializeToString() == wire

    response = torchproto.PredictResponse.FromString(ld(1, array) + ld(2, ld(1, b"o") + ld(2, array)))
    assert len(response.outputs) == 1 and "o" in response.map_outputs
    assert torchproto.PredictRequest.DESCRIPTOR.full_name == "pytorch.eas.PredictRequest"
    assert "bool_val" not in torchproto.ArrayProto.DESCRIPTOR.fields_by_name


def test_array_data_type_numbers_follow_tensorflow() -> None:
    expected = ["DT_INVALID", "DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16",
                "DT_INT8", "DT_STRING", "DT_COMPLEX64", "DT_INT64", "DT_BOOL", "DT_QINT8",
                "DT_QUINT8", "DT_QINT32", "DT_BFLOAT16", "DT_QINT16", "DT_QUINT16", "DT_UINT16",
                "DT_COMPLEX128", "DT_HALF", "DT_RESOURCE", "DT_VARIANT"]
    for module in (tfproto, torchproto):
        assert [module.ArrayDataType.Name(i) for i in range(len(expected))] == expected


def test_messages_live_outside_the_default_pool() -> None:
    # The official SDK registers top-level "ArrayProto" in the default pool.
    assert tfproto.ArrayProto.DESCRIPTOR.file.pool is not descriptor_pool.Default()


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([[0.1, 1e300]], dtype=np.float64),
    np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    np.array([-128, 127], dtype=np.int8),
    np.array([-300, 300], dtype=np.int16),
    np.array([0, 255], dtype=np.uint8),
    np.array([0, 65535], dtype=np.uint16),
    np.array([[2**62]], dtype=np.int64),
    np.array([True, False, True]),
    np.array(5.0, dtype=np.float32),
    np.zeros((0, 4), dtype=np.float32),
], ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_numeric_round_trip(array: np.ndarray) -> None:
    back = tfproto.array_from_proto(tfproto.ArrayProto.FromString(
        tfproto.array_to_proto(array).SerializeToString()))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_strings_come_back_as_bytes() -> None:
    proto = tfproto.array_to_proto(np.array([["a", "é"], ["b", "c"]]))
    assert proto.dtype == tfproto.DT_STRING
    back = tfproto.array_from_proto(proto)
    assert back.shape == (2, 2) and back[0, 1] == "é".encode()
    assert list(tfproto.array_to_proto(np.array([b"\xff"], dtype=object)).string_val) == [b"\xff"]


def test_widened_output_types() -> None:
    assert tfproto.array_to_proto(np.array([1.5], np.float16)).dtype == tfproto.DT_FLOAT
    assert tfproto.array_to_proto(np.array([7], np.uint32)).dtype == tfproto.DT_INT64
    torch_bool = torchproto.array_to_proto(np.array([True, False]))
    assert torch_bool.dtype == tfproto.DT_UINT8 and list(torch_bool.int_val) == [1, 0]
    with pytest.raises(ValueError, match="complex"):
        tfproto.array_to_proto(np.array([1j]))


def test_lenient_decoding() -> None:
    unset_dtype = tfproto.ArrayProto(int64_val=[1, 2])
    assert tfproto.array_from_proto(unset_dtype).dtype == np.int64
    one_fills_shape = tfproto.ArrayProto(dtype=tfproto.DT_FLOAT, float_val=[3.0])
    one_fills_shape.array_shape.dim.extend([2, 2])
    np.testing.assert_array_equal(tfproto.array_from_proto(one_fills_shape), np.full((2, 2), 3.0))
    no_shape = tfproto.ArrayProto(dtype=tfproto.DT_DOUBLE, double_val=[1.0, 2.0])
    assert tfproto.array_from_proto(no_shape).shape == (2,)


def test_bad_arrays_are_client_errors() -> None:
    wrong_count = tfproto.ArrayProto(dtype=tfproto.DT_FLOAT, float_val=[1, 2, 3])
    wrong_count.array_shape.dim.extend([2, 2])
    with pytest.raises(ProcessorError, match=r"needs 4 values, received 3") as info:
        tfproto.array_from_proto(wrong_count, "input 'x'")
    assert info.value.status == 400 and "input 'x'" in info.value.message

    with pytest.raises(ProcessorError, match="DT_HALF is not supported"):
        tfproto.array_from_proto(tfproto.ArrayProto(dtype=tfproto.DT_HALF))
    with pytest.raises(ProcessorError, match="out of range for DT_INT8"):
        tfproto.array_from_proto(tfproto.ArrayProto(dtype=tfproto.DT_INT8, int_val=[300]))
    with pytest.raises(ProcessorError, match="cannot be sent"):
        torchproto.array_from_proto(torchproto.ArrayProto(dtype=tfproto.DT_BOOL))
