"""Drives Alibaba's own management SDKs, unchanged; runs in tests/sdk/mgmt/.venv.

`alibabacloud-eas20210701` (the generated EAS OpenAPI client, over
`alibabacloud-tea-openapi`) and `alipai` (the PAI SDK) pin versions that cannot live
beside Ray, so pytest (main venv) runs this script in their own venv and talks to it in
JSON lines, one command in on stdin, one answer out on stdout (starting with RESULT_MARK),
so the test decides every step and checks every answer:

  {"op": "client", "endpoint": "127.0.0.1:8080", "access_key_id", "access_key_secret",
   "signature_algorithm": null | "v2"}
      an `alibabacloud_eas20210701.client.Client` with `protocol="http"`: the default
      signs ACS3-HMAC-SHA256, "v2" the ROA HMAC-SHA1 `acs <AK>:<signature>`
  {"op": "call", "method": "describe_service", "args": ["local", "svc"],
   "request": {"model": "UpdateServiceRequest", "map": {"UpdateType": "merge", "body": "..."}}}
      -> {"ok": true, "status": 200, "body": <the response model's to_map()>}
       | {"ok": false, "status": 401, "code": "...", "message": "...", "data": {...}}
  {"op": "predict", "endpoint", "access_key_id", "access_key_secret", "region", "service", "data"}
      -> {"ok": true, "result": ..., "endpoint": ...}: `pai.predictor.Predictor(service)`,
      which finds the service through DescribeService (its own vendored EAS client, ROA
      signed, pointed at the server) and POSTs `data` as JSON to its InternetEndpoint
  {"op": "exit"}
"""

from __future__ import annotations

import inspect
import json
import sys
import traceback
from typing import Any

RESULT_MARK = "SDK-RESULT "


def make_client(cmd: dict[str, Any]) -> Any:
    from alibabacloud_eas20210701.client import Client
    from alibabacloud_tea_openapi import models as open_api_models

    config = open_api_models.Config(
        access_key_id=cmd["access_key_id"],
        access_key_secret=cmd["access_key_secret"],
        endpoint=cmd["endpoint"],
        protocol="http",
        region_id=cmd.get("region", "local"),
        read_timeout=60_000,
    )
    if cmd.get("signature_algorithm"):
        config.signature_algorithm = cmd["signature_algorithm"]
    return Client(config)


def call(client: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    from alibabacloud_eas20210701 import models

    args = list(cmd.get("args") or [])
    method = getattr(client, cmd["method"])
    request = cmd.get("request")
    if request is None and "request" in inspect.signature(method).parameters:
        # An action that takes a request model, called with none of its fields set.
        request = {"model": "".join(part.title() for part in cmd["method"].split("_")) + "Request"}
    if request:
        model = getattr(models, request["model"])()
        args.append(model.from_map(request.get("map") or {}))
    try:
        response = method(*args)
    except Exception as exc:  # the SDK's ClientException / ServerException
        return {"ok": False, "status": getattr(exc, "status_code", None) or getattr(exc, "statusCode", None),
                "code": getattr(exc, "code", None), "message": str(getattr(exc, "message", exc)),
                "data": getattr(exc, "data", None), "type": type(exc).__name__}
    return {"ok": True, "status": response.status_code, "body": response.body.to_map()}


def predict(cmd: dict[str, Any]) -> dict[str, Any]:
    """The PAI SDK's Predictor, found by name: DescribeService gives it the endpoint and token."""
    from alibabacloud_credentials.models import Config as CredentialConfig
    from alibabacloud_tea_openapi.models import Config
    from pai.api.base import ServiceName
    from pai.api.client_factory import ClientFactory
    from pai.common.utils import http_user_agent
    from pai.predictor import Predictor
    from pai.session import Session

    session = Session(region_id=cmd["region"], workspace_id="0", network="PUBLIC",
                      credential_config=CredentialConfig(type="access_key", access_key_id=cmd["access_key_id"],
                                                         access_key_secret=cmd["access_key_secret"]))
    # The session's EAS client, made as ClientFactory makes it (ROA, signature v2), but
    # pointed at this server over http instead of pai-eas.<region>.aliyuncs.com.
    config = Config(region_id=cmd["region"], credential=session._acs_credential_client(), endpoint=cmd["endpoint"],
                    protocol="http", signature_algorithm="v2", user_agent=http_user_agent())
    session.acs_client_container[ServiceName.PAI_EAS] = ClientFactory.ClientByServiceName[ServiceName.PAI_EAS](config)
    predictor = Predictor(service_name=cmd["service"], session=session)
    return {"ok": True, "endpoint": predictor.endpoint, "status": predictor.service_status,
            "result": predictor.predict(cmd["data"])}


def main() -> None:
    client = None
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            if cmd["op"] == "exit":
                return
            if cmd["op"] == "client":
                client = make_client(cmd)
                answer: dict[str, Any] = {"ok": True}
            elif cmd["op"] == "call":
                answer = call(client, cmd)
            elif cmd["op"] == "predict":
                answer = predict(cmd)
            else:
                answer = {"ok": False, "message": f"unknown op {cmd['op']!r}"}
        except Exception as exc:  # a driver bug: say so, keep serving
            answer = {"ok": False, "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(RESULT_MARK + json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
