"""The official Go SDK's QueueClient (`eas.NewQueueClient`) against an Async service of a
real eas-server (issue 16).

The Go tests live in tests/sdk/goqueue (queue_test.go): put with tags, a WebSocket watch
of the sink with commit, attributes (protobuf), get by request id and by index, delete,
truncate, priority, auto-commit, and the watch over plain HTTP. The SDK comes from the module proxy or the local
official source, as for tests/sdk/test_go_sdk.py (`build_module`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.sdk.harness import SDK_DIR, deploy
from tests.sdk.test_go_sdk import _go, build_module
from tests.sdk.test_queue_sdk import async_spec, server  # noqa: F401 (the module's own server)

pytestmark = pytest.mark.e2e

GO_TESTS = {"TestQueueAnswersReachTheSink", "TestQueueOperations", "TestQueueHttpWatch"}


def test_official_go_queue_client(server, tmp_path):  # noqa: F811
    if shutil.which("go") is None:
        pytest.fail("Go is missing: install it (the Go SDK test builds the official SDK)")
    build, source = build_module(tmp_path, SDK_DIR / "goqueue")
    compiled = _go(["test", "-c", "-o", "queue.test", "."], build, timeout=600)
    assert compiled.returncode == 0, f"building the Go queue tests failed:\n{compiled.stderr[-4000:]}"
    print(f"Go SDK from {source}")
    token = deploy(server, async_spec("go_queue"), tmp_path)
    env = {**os.environ, "EAS_ENDPOINT": server.url, "EAS_QUEUE_SERVICE": "go_queue",
           "EAS_QUEUE_TOKEN": token}
    proc = subprocess.run(["go", "tool", "test2json", "-t", "./queue.test", "-test.v", "-test.count=1"],
                          cwd=build, env=env, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    outcome = {e["Test"]: e["Action"] for e in events if e.get("Test") and e["Action"] in ("pass", "fail", "skip")}
    failed = {name: "".join(e.get("Output", "") for e in events if e.get("Test") == name)
              for name, action in outcome.items() if action != "pass"}
    assert not failed, f"{failed}\n{server.log_tail()}"
    assert set(outcome) == GO_TESTS, (set(outcome) ^ GO_TESTS, proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0
