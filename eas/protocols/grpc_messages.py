"""Protobuf messages of the gRPC face: KServe's Open Inference Protocol and the raw EAS predict RPC.

Schemas: protos/grpc_predict_v2.proto (`inference.*`, KServe's messages with the same
names and field numbers, so `tritonclient` and KServe clients talk to us unchanged;
`InferParameter` also carries Triton's `double_param` and `uint64_param`) and
protos/eas_predict.proto (`eas.PredictRequest/PredictReply`, an EAS predict call as
bytes). The classes come from the descriptor set `make protos` compiles beside them,
loaded into a private pool (processors/protobuf.py), because tritonclient registers
messages with these very names in the default one.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from processors import protobuf

_defs = protobuf.load(resources.files(__package__) / "protos" / "descriptors.binpb")

#: gRPC service names (what clients put in the request path before the method name).
INFERENCE_SERVICE: str = _defs["inference.GRPCInferenceService"].full_name
PREDICT_SERVICE: str = _defs["eas.Predict"].full_name

ServerLiveRequest: Any = _defs["inference.ServerLiveRequest"]
ServerLiveResponse: Any = _defs["inference.ServerLiveResponse"]
ServerReadyRequest: Any = _defs["inference.ServerReadyRequest"]
ServerReadyResponse: Any = _defs["inference.ServerReadyResponse"]
ModelReadyRequest: Any = _defs["inference.ModelReadyRequest"]
ModelReadyResponse: Any = _defs["inference.ModelReadyResponse"]
ServerMetadataRequest: Any = _defs["inference.ServerMetadataRequest"]
ServerMetadataResponse: Any = _defs["inference.ServerMetadataResponse"]
ModelMetadataRequest: Any = _defs["inference.ModelMetadataRequest"]
ModelMetadataResponse: Any = _defs["inference.ModelMetadataResponse"]
ModelInferRequest: Any = _defs["inference.ModelInferRequest"]
ModelInferResponse: Any = _defs["inference.ModelInferResponse"]
ModelStreamInferResponse: Any = _defs["inference.ModelStreamInferResponse"]
InferParameter: Any = _defs["inference.InferParameter"]
InferTensorContents: Any = _defs["inference.InferTensorContents"]
PredictRequest: Any = _defs["eas.PredictRequest"]
PredictReply: Any = _defs["eas.PredictReply"]
