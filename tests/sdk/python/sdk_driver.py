"""Drives the official `eas-prediction` SDK, unchanged; runs in tests/sdk/python/.venv.

The SDK needs protobuf<=3.20.3, which cannot live beside Ray, so pytest (main venv)
runs this script in the SDK's own venv and talks to it in JSON:

  stdin (or the file named by argv[1])  {"calls": [{"client": {...}, "request": {...}, "repeat": n}, ...]}
  stdout [{"ok": true, "results": [...]} | {"ok": false, "code": .., "message": ..}, ...]
         on one line starting with RESULT_MARK (the SDK logs its errors to stdout too)

or, for the DIRECT-mode scaling check, {"spread": {...}} (see `spread`).

client:  endpoint, service, token, endpoint_type ("DIRECT"...), custom_url, retry_count, timeout_ms
request: {"kind": "string", "body": str}
         {"kind": "bytes", "file": path}  (a StringRequest of the file's bytes, sent as they are)
         {"kind": "tf", "signature": str, "feeds": [{"name", "shape", "dtype", "values"}], "fetches": [str]}
         {"kind": "torch", "feeds": [{"index", "shape", "dtype", "values"}], "fetches": [int],
          "compress": bool}  (TorchRequest(True): the body Snappy-compressed)
         {"kind": "onnx", "tensors": [{"name", "shape", "dtype" (numpy), "values"}]}  (OnnxRequest)
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from eas_prediction import PredictClient, PredictException, StringRequest, TFRequest, TorchRequest
from eas_prediction import onnx_processor_data_helper as onnx_helper
from eas_prediction.onnx_request import OnnxRequest

RESULT_MARK = "SDK-RESULT "


def make_client(cfg: dict) -> PredictClient:
    client = PredictClient(cfg.get("endpoint", ""), cfg["service"], custom_url=cfg.get("custom_url", ""))
    if cfg.get("token"):
        client.set_token(cfg["token"])
    if cfg.get("endpoint_type"):
        client.set_endpoint_type(cfg["endpoint_type"])
    if "retry_count" in cfg:
        client.set_retry_count(cfg["retry_count"])
    if "timeout_ms" in cfg:
        client.set_timeout(cfg["timeout_ms"])
    client.init()
    return client


def build(request: dict):
    kind = request["kind"]
    if kind == "string":
        return StringRequest(request["body"])
    if kind == "tf":
        req = TFRequest(request.get("signature", "serving_default"))
        for feed in request["feeds"]:
            req.add_feed(feed["name"], feed["shape"], getattr(TFRequest, feed["dtype"]), feed["values"])
        for name in request.get("fetches", []):
            req.add_fetch(name)
        return req
    if kind == "bytes":
        with open(request["file"], "rb") as f:
            return StringRequest(f.read())
    if kind == "onnx":
        req = OnnxRequest()
        for t in request["tensors"]:
            array = np.array(t["values"], dtype=t["dtype"]).reshape(t["shape"])
            req.add_tensor(onnx_helper.from_array(array, t["name"]))
        return req
    if kind == "torch":
        req = TorchRequest(bool(request.get("compress")))
        for feed in request["feeds"]:
            req.add_feed(feed["index"], feed["shape"], getattr(TorchRequest, feed["dtype"]), feed["values"])
        for index in request.get("fetches", []):
            req.add_fetch(index)
        return req
    raise ValueError(f"unknown request kind {kind!r}")


def read(request: dict, response) -> object:
    kind = request["kind"]
    if kind in ("string", "bytes"):
        data = response.response_data
        return data.decode("utf-8") if isinstance(data, bytes) else str(data)
    if kind == "onnx":
        tensors = [response.get_tensor(i) for i in range(response.get_size())]
        return {t.name: {"shape": list(t.dims), "values": onnx_helper.to_array(t).ravel().tolist()}
                for t in tensors}
    if kind == "tf":
        names = request.get("fetches") or list(response.response.outputs)
        return {name: {"shape": list(response.get_tensor_shape(name)), "values": list(response.get_values(name))}
                for name in names}
    outputs = request.get("fetches") or range(len(response.response.outputs))
    return {str(i): {"shape": list(response.get_tensor_shape(i)), "values": list(response.get_values(i))}
            for i in outputs}


def run_call(call: dict) -> dict:
    client = make_client(call["client"])
    try:
        results = []
        for _ in range(call.get("repeat", 1)):
            results.append(read(call["request"], client.predict(build(call["request"]))))
        return {"ok": True, "results": results}
    except PredictException as exc:
        message = exc.message.decode("utf-8", "replace") if isinstance(exc.message, bytes) else str(exc.message)
        return {"ok": False, "code": exc.code, "message": message}
    finally:
        client.destroy()


def instance_of(client: PredictClient, body: str) -> str:
    return json.loads(client.predict(StringRequest(body)).response_data)["instance"]


def spread(cfg: dict) -> dict:
    """DIRECT mode across a scale-up, with pytest scaling the service in between.

    1. call `before_calls` times and note the instances that answered; write sync_dir/ready;
    2. wait (at most wait_s) for pytest to create sync_dir/scaled once scaling finished;
    3. call every 20 ms until two instances have answered or `deadline_s` has passed,
       then `after_calls` more to see how calls are shared.
    """
    client = make_client(cfg["client"])
    sync = cfg["sync_dir"]
    try:
        before = [instance_of(client, cfg["body"]) for _ in range(cfg.get("before_calls", 10))]
        with open(os.path.join(sync, "ready.tmp"), "w") as f:
            json.dump(before, f)
        os.replace(os.path.join(sync, "ready.tmp"), os.path.join(sync, "ready"))
        wait_until = time.monotonic() + cfg.get("wait_s", 180)
        while not os.path.exists(os.path.join(sync, "scaled")):
            if time.monotonic() > wait_until:
                return {"ok": False, "message": "pytest never said the service was scaled"}
            time.sleep(0.05)
        started = time.monotonic()
        seen: list[str] = []
        while len(set(seen)) < 2 and time.monotonic() - started < cfg.get("deadline_s", 10):
            seen.append(instance_of(client, cfg["body"]))
            time.sleep(0.02)
        spread_s = time.monotonic() - started
        after = [instance_of(client, cfg["body"]) for _ in range(cfg.get("after_calls", 40))]
        return {"ok": True, "before": before, "until_spread": seen, "spread_s": spread_s, "after": after}
    except PredictException as exc:
        return {"ok": False, "code": exc.code, "message": str(exc.message)}
    finally:
        client.destroy()


def main() -> None:
    if len(sys.argv) > 1:  # a long-running job reads from a file, leaving stdin alone
        with open(sys.argv[1]) as f:
            job = json.load(f)
    else:
        job = json.load(sys.stdin)
    if "spread" in job:
        out: object = spread(job["spread"])
    else:
        out = [run_call(call) for call in job["calls"]]
    sys.stdout.write("\n" + RESULT_MARK + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
