"""Which official-SDK request a protobuf body is, to answer a misdirected one clearly.

Every request class of the EAS SDKs serialises a protobuf, and none says on the wire
which one it is. A processor parses the types it takes (the onnx processor: JSON, a TF
PredictRequest or an OnnxRequest); when that fails, `misdirected` tells whether the
body is, cleanly, a request meant for another processor (every field known, none of a
wrong wire type), so the 400 names the processor it needs instead of a decoding error:
a TorchRequest sent to a tensorflow service, or an EasyRecRequest / TorchRecRequest,
whose EasyRec and TorchEasyRec processors eas-serving does not serve.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Callable

from google.protobuf.unknown_fields import UnknownFieldSet

from . import protobuf

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")

#: request kind -> (message class, what a body of it holds when it is one, who serves it).
#: In this order: a PBRequest of int and string features also reads cleanly as a TF
#: PredictRequest, while no SDK's TF, Torch or ONNX request reads cleanly as a PBRequest
#: (their first field is a message where PBRequest has a number, and arrays carry shapes).
KINDS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "EasyRecRequest or TorchRecRequest": (
        _defs["eas.rec.PBRequest"],
        lambda m: bool(m.user_features or m.item_ids or m.context_features or m.item_features),
        "EAS's easyrec or torchrec (TorchEasyRec) processor, which eas-serving does not provide"),
    "TFRequest": (_defs["PredictRequest"], lambda m: bool(m.inputs), "the tensorflow or onnx processor"),
    "TorchRequest": (_defs["pytorch.eas.PredictRequest"], lambda m: bool(m.inputs or m.map_inputs),
                     "the pytorch processor"),
    "OnnxRequest": (_defs["hie.processor.DataProto"],
                    lambda m: bool(m.tensors) and all(t.name and t.data_type for t in m.tensors),
                    "the onnx processor"),
}


def _clean(message: Any) -> bool:
    """No unknown field (nor one of a wrong wire type) anywhere in `message`."""
    if len(UnknownFieldSet(message)):
        return False
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values() if field.message_type.fields_by_name["value"].message_type else ()
        elif field.is_repeated:
            items = value
        else:
            items = (value,)
        if not all(_clean(item) for item in items):
            return False
    return True


def kind_of(body: bytes) -> str | None:
    """The SDK request kind `body` cleanly is (first match in KINDS order), or None."""
    for kind, (cls, holds, _) in KINDS.items():
        message = cls()
        try:
            message.ParseFromString(body)
        except Exception:
            continue
        if holds(message) and _clean(message):
            return kind
    return None


def misdirected(body: bytes, accepted: tuple[str, ...], processor: str) -> str | None:
    """The 400 text for a body that is an SDK request this processor does not take, or
    None (it is one of `accepted`, or none of them: the caller's own error stands)."""
    kind = kind_of(body)
    if kind is None or kind in accepted:
        return None
    needs = KINDS[kind][2]
    takes = " or ".join(("JSON", *accepted))
    article = "an" if kind[0] in "AEIOU" else "a"
    return (f"request body is {article} {kind} (official EAS SDK): it needs {needs}; "
            f"this {processor} service takes {takes}")
