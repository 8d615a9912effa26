"""gRPC pass-through (`metadata.enable_grpc`): a container whose port is a gRPC server,
called with the client's own methods through eas-server's gRPC port.

The image is built in the test, offline but for Go modules: a static Go gRPC server
(tests/e2e/fixtures/grpcapp: the standard health service and an Echo service registered
by hand over google.protobuf.StringValue) in a `FROM scratch` image. The client is
grpcio with generic calls and identity serializers, as a client with its own .proto
would send them. Real eas-server, Ray, podman and gRPC; nothing mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from eas.instance import container
from tests.e2e.harness import EasServer, write_json
from tests.e2e.test_containers import gone, owner, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("go") is None,
                       reason="needs podman (make container-deps) and go"),
]

APP = Path(__file__).parent / "fixtures" / "grpcapp"
IMAGE = "localhost/eas-e2e-grpcapp:v1"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


@pytest.fixture(scope="module")
def grpc_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The gRPC app, built here from source into a `FROM scratch` image (no registry)."""
    build = tmp_path_factory.mktemp("grpcapp")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    built = subprocess.run(["go", "build", "-o", str(build / "grpcapp"), "."], cwd=APP, env=env, timeout=600,
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.fail("building tests/e2e/fixtures/grpcapp needs google.golang.org/grpc from the Go module proxy "
                    f"(GOPROXY) or the module cache: {built.stderr.strip()[-800:]}", pytrace=False)
    (build / "Containerfile").write_text('FROM scratch\nCOPY grpcapp /grpcapp\nENTRYPOINT ["/grpcapp"]\n')
    subprocess.run(["podman", "build", "-q", "-t", IMAGE, str(build)], check=True, timeout=300, capture_output=True)
    return IMAGE


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    server = EasServer(tmp_path_factory.mktemp("eas-data")).start()
    yield server
    server.stop()
    container.reap(owner(server))


def string_value(text: str) -> bytes:
    """A serialized google.protobuf.StringValue (field 1, length-delimited)."""
    data = text.encode()
    assert len(data) < 128
    return b"\x0a" + bytes([len(data)]) + data


def grpc_service(name: str, image: str, enable_grpc: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "instance": 1, "cpu": 1, "memory": 256, "enable_grpc": enable_grpc},
        "containers": [{"image": image, "command": ["/grpcapp"], "port": 50051,
                        "env": [{"name": "PORT", "value": 50051}]}],
    }


def test_grpc_passthrough_to_a_container(srv: EasServer, grpc_image: str, tmp_path: Path) -> None:
    srv.eascmd("create", str(write_json(tmp_path / "g.json", grpc_service("grpcsvc", grpc_image))))
    token = srv.wait_status("grpcsvc", "Running", timeout=180)["AccessToken"]
    named = (("x-eas-service", "grpcsvc"), ("authorization", f"Bearer {token}"))
    with grpc.insecure_channel(srv.grpc_target) as channel:
        check = channel.unary_unary(HEALTH_CHECK)
        say = channel.unary_unary("/eas.test.Echo/Say")
        # The standard health service of the container, through the gateway with the token.
        assert check(b"", metadata=named, timeout=30) == SERVING
        assert check(b"", metadata=(("x-eas-service", "grpcsvc"), ("authorization", token)), timeout=30) == SERVING
        for metadata, code in [
            ((("x-eas-service", "grpcsvc"),), grpc.StatusCode.UNAUTHENTICATED),
            ((("x-eas-service", "grpcsvc"), ("authorization", "Bearer wrong-token")), grpc.StatusCode.UNAUTHENTICATED),
            ((("x-eas-service", "nosuch"), ("authorization", f"Bearer {token}")), grpc.StatusCode.NOT_FOUND),
            ((("authorization", f"Bearer {token}"),), grpc.StatusCode.NOT_FOUND),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                check(b"", metadata=metadata, timeout=30)
            assert refused.value.code() == code, (metadata, refused.value)
            assert refused.value.details() and "Traceback" not in refused.value.details()

        # The app's own methods: its metadata in, its headers, trailers and status out.
        answer, call = say.with_call(string_value("hi"), metadata=(*named, ("x-custom", "yes")), timeout=30)
        assert answer == string_value("echo: hi")
        assert ("x-app-header", "hello") in tuple(call.initial_metadata())
        trailers = dict(call.trailing_metadata())
        assert trailers["x-seen-custom"] == "yes"
        assert trailers["x-seen-authorization"] == "" and trailers["x-seen-service-key"] == ""
        with pytest.raises(grpc.RpcError) as failed:
            say(string_value("fail"), metadata=named, timeout=30)
        assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "told to fail")
        # A server-streaming call, answers passed on as they come.
        counted = list(channel.unary_stream("/eas.test.Echo/Count")(string_value("4"), metadata=named, timeout=30))
        assert counted == [string_value(str(i)) for i in range(1, 5)]
        # The client's deadline reaches the container: its call ends too.
        with pytest.raises(grpc.RpcError) as late:
            channel.unary_unary("/eas.test.Echo/Wait")(string_value(""), metadata=named, timeout=1)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until("the container saw the deadline",
                   lambda: say(string_value("waits"), metadata=named, timeout=30) == string_value("1"), timeout=30)

    # A channel whose authority is EAS's endpoint form still routes by the metadata key.
    authority = [("grpc.default_authority", "grpcsvc.123456.cn-hangzhou.pai-eas.aliyuncs.com:80")]
    with grpc.insecure_channel(srv.grpc_target, options=authority) as channel:
        assert channel.unary_unary(HEALTH_CHECK)(b"", metadata=named, timeout=30) == SERVING

    # Without enable_grpc a container service takes no pass-through, and says what to set.
    srv.eascmd("modify", "grpcsvc", "-Dmetadata.enable_grpc=false")
    with grpc.insecure_channel(srv.grpc_target) as channel:
        def refused_unimplemented() -> bool:
            try:
                channel.unary_unary(HEALTH_CHECK)(b"", metadata=named, timeout=30)
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNIMPLEMENTED and "enable_grpc" in (exc.details() or "")
            return False

        wait_until("UNIMPLEMENTED once enable_grpc is off", refused_unimplemented, timeout=180)

    srv.eascmd("delete", "grpcsvc", "-y")
    wait_until("no containers after delete", lambda: gone(srv, "grpcsvc"), timeout=120)
