"""Drive an eas-server with tritonclient, over v2 REST and gRPC; runs in tests/e2e/v2client/.venv.

Reads a plan from stdin: `{"http": "127.0.0.1:PORT", "grpc": "127.0.0.1:PORT", "calls": [...]}`,
one call per entry, and writes one result per call to stdout as JSON:
`{"ok": true, "value": ...}` or `{"ok": false, "status": "<HTTP code or gRPC code>", "message": ...}`.

Calls (`proto` is "http" or "grpc"; `token` goes in the Authorization header / metadata):
  {"call": "server_live" | "server_ready" | "server_metadata", "proto"}
  {"call": "model_ready" | "model_metadata", "proto", "model", "token"}
  {"call": "infer", "proto", "model", "token",
   "inputs": [{"name", "datatype", "shape", "data": [flat values], "binary": bool}],
   "outputs": [{"name", "binary": bool}] | null}
An infer value is `{output name: {"datatype", "shape", "data": [flat values]}}`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def _array(spec: dict[str, Any]) -> np.ndarray:
    if spec["datatype"] == "BYTES":
        return np.array([s.encode() for s in spec["data"]], dtype=object).reshape(spec["shape"])
    return np.array(spec["data"], dtype=triton_to_np_dtype(spec["datatype"])).reshape(spec["shape"])


def _plain(array: np.ndarray) -> list[Any]:
    if array.dtype == object or array.dtype.kind in "SU":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.ravel().tolist()


def _infer(client: Any, lib: Any, proto: str, call: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    inputs = []
    for spec in call["inputs"]:
        tensor = lib.InferInput(spec["name"], spec["shape"], spec["datatype"])
        if proto == "http":
            tensor.set_data_from_numpy(_array(spec), binary_data=spec.get("binary", True))
        else:
            tensor.set_data_from_numpy(_array(spec))
        inputs.append(tensor)
    outputs = None
    if call.get("outputs") is not None:
        outputs = [lib.InferRequestedOutput(o["name"], binary_data=o.get("binary", True)) if proto == "http"
                   else lib.InferRequestedOutput(o["name"]) for o in call["outputs"]]
    result = client.infer(call["model"], inputs, outputs=outputs, headers=headers, request_id="req-1")
    response = result.get_response()
    names = [o["name"] for o in (response["outputs"] if proto == "http" else
                                 [{"name": t.name} for t in response.outputs])]
    value = {}
    for name in names:
        array = result.as_numpy(name)
        meta = result.get_output(name)
        datatype = meta["datatype"] if proto == "http" else meta.datatype
        value[name] = {"datatype": datatype, "shape": list(array.shape), "data": _plain(array)}
    value["_id"] = response["id"] if proto == "http" else response.id
    return value


def run(plan: dict[str, Any]) -> list[dict[str, Any]]:
    clients = {"http": (httpclient.InferenceServerClient(plan["http"], network_timeout=60), httpclient),
               "grpc": (grpcclient.InferenceServerClient(plan["grpc"]), grpcclient)}
    results = []
    try:
        for call in plan["calls"]:
            proto = call["proto"]
            client, lib = clients[proto]
            # gRPC metadata keys must be lower case; HTTP headers are case-blind.
            headers = {"authorization" if proto == "grpc" else "Authorization": call["token"]} \
                if call.get("token") is not None else None
            try:
                kind = call["call"]
                if kind == "server_live":
                    value: Any = client.is_server_live()
                elif kind == "server_ready":
                    value = client.is_server_ready()
                elif kind == "server_metadata":
                    value = client.get_server_metadata() if proto == "http" else \
                        client.get_server_metadata(as_json=True)
                elif kind == "model_ready":
                    value = client.is_model_ready(call["model"], headers=headers)
                elif kind == "model_metadata":
                    value = client.get_model_metadata(call["model"], headers=headers) if proto == "http" else \
                        client.get_model_metadata(call["model"], headers=headers, as_json=True)
                    for kind_ in ("inputs", "outputs"):  # gRPC's JSON form writes int64 as strings
                        for tensor in value.get(kind_, []):
                            tensor["shape"] = [int(d) for d in tensor["shape"]]
                elif kind == "infer":
                    value = _infer(client, lib, proto, call, headers or {})
                else:
                    raise ValueError(f"unknown call {kind!r}")
                results.append({"ok": True, "value": value})
            except InferenceServerException as exc:
                results.append({"ok": False, "status": str(exc.status()), "message": exc.message()})
    finally:
        for client, _ in clients.values():
            client.close()
    return results


if __name__ == "__main__":
    json.dump(run(json.load(sys.stdin)), sys.stdout)
