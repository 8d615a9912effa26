"""`make bench`: side-by-side numbers in one run, printed as tables with ratios, saved as JSON.

Scenarios (all on 127.0.0.1, each bounded in time):
  echo      our gateway vs bare Ray Serve HTTP vs a plain ASGI echo (the floor)
  sklearn   a small sklearn model: us vs MLServer serving the same file
  batching  an ONNX MLP at concurrency 32, rpc.batching on vs off
  batching_torch  the same MLP as TorchScript at concurrency 16, rpc.batching on vs off
  overload  about 2x capacity offered: admitted p99 vs unloaded p99, share shed with 450
  mirror    a primary's p99 with and without a 100 % mirror
  wake      time from the first request to a sleeping service to its first answer
  ttfb      a streamed answer: time to first byte and to the last, through the gateway vs direct
  processors in-process framework call vs through the platform, per processor
  queue     an Async service's queues: put and get throughput and latency, end to end
            (put -> instance -> sink) throughput and one request's round trip

Load comes from bench/loadgen (compiled Go, keep-alive), so the client is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np

from bench import targets

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "loadgen" / "loadgen"
DURATION = float(os.environ.get("BENCH_SECONDS", "5"))

ECHO_CODE = '''
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return data, 200
'''
SLOW_CODE = '''
import time
class Slow:
    def initialize(self):
        pass
    def process(self, data):
        time.sleep(0.02)
        return data, 200
'''


def load(url: str, concurrency: int, seconds: float = DURATION, body: bytes = b"{}",
         headers: dict[str, str] | None = None, rate: float = 0, method: str = "POST", count: int = 0,
         warmup: str = "1s") -> dict[str, Any]:
    """Closed loop at `concurrency`, or open loop at `rate` requests/s when given; at most
    `count` requests when given."""
    with tempfile.NamedTemporaryFile(suffix=".body", delete=False) as fh:
        fh.write(body)
    cmd = [str(LOADGEN), "-url", url, "-c", str(concurrency), "-d", f"{seconds}s", "-body-file", fh.name,
           "-warmup", warmup, "-method", method, "-n", str(count)]
    if rate:
        cmd += ["-rate", str(rate)]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(fh.name)
    return json.loads(out)


def table(title: str, headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [f"\n{title}", line]
    for i, row in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


def write_code(workdir: Path, name: str, code: str) -> Path:
    directory = workdir / name
    directory.mkdir(exist_ok=True)
    (directory / "app.py").write_text(code)
    return directory


def python_service(name: str, code: Path, **meta: Any) -> dict[str, Any]:
    return {"name": name, "processor_type": "python", "processor_path": str(code),
            "metadata": {"instance": 1, "cpu": 1, **meta}}


# -- scenarios -----------------------------------------------------------------------


def echo(workdir: Path) -> dict[str, Any]:
    levels = [1, 8, 32, 64]
    results: dict[str, dict[str, Any]] = {}

    def measure(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return {str(c): load(url, c, headers=headers) for c in levels}

    with targets.plain_echo(workdir) as url:
        results["plain ASGI echo"] = measure(url)
    with targets.bare_serve(workdir) as url:
        results["bare Ray Serve HTTP"] = measure(url)
    eas = targets.EasServer(workdir)
    with eas.running():
        token = eas.create(python_service("echo", write_code(workdir, "echo", ECHO_CODE), workers=8,
                                          rpc={"worker_threads": 8, "max_queue_size": 256}))
        results["eas gateway"] = measure(f"{eas.url}/api/predict/echo", {"Authorization": token})
        items = httpx.get(f"{eas.url}/api/v1/servicediscovery/upstreams/echo").json()["endpoints"]["items"]
        direct = f"http://{items[0]['ip']}:{items[0]['port']}/api/predict/echo"
        results["eas instance (DIRECT)"] = measure(direct, {"Authorization": token})
    rows = []
    for name, by_c in results.items():
        rows.append([name, by_c["1"]["p50_ms"], by_c["1"]["p99_ms"]] + [by_c[str(c)]["rps"] for c in levels])
    text = table("echo: latency at concurrency 1 (ms) and req/s by concurrency",
                 ["target", "p50", "p99"] + [f"rps c={c}" for c in levels], rows)
    ours, serve, floor = results["eas gateway"], results["bare Ray Serve HTTP"], results["plain ASGI echo"]
    ratios = {
        "p50 ours / bare Serve (target <= 1.0)": ours["1"]["p50_ms"] / serve["1"]["p50_ms"],
        "rps c=32 ours / bare Serve (target >= 1.5)": ours["32"]["rps"] / serve["32"]["rps"],
        "p50 ours / plain ASGI floor": ours["1"]["p50_ms"] / floor["1"]["p50_ms"],
        "rps c=32 ours / plain ASGI floor": ours["32"]["rps"] / floor["32"]["rps"],
    }
    return {"results": results, "ratios": ratios, "text": text}


def sklearn(workdir: Path) -> dict[str, Any]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model_path = workdir / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), model_path)
    row = x[0].tolist()
    results: dict[str, Any] = {}
    eas = targets.EasServer(workdir)
    with eas.running():
        token = eas.create({"name": "iris", "processor": "sklearn", "model_path": str(model_path),
                            "metadata": {"instance": 1, "cpu": 1, "rpc": {"max_queue_size": 256}}})
        body = json.dumps({"instances": [row]}).encode()
        url = f"{eas.url}/api/predict/iris"
        results["eas (sklearn processor)"] = {c: load(url, c, body=body, headers={"Authorization": token})
                                              for c in ("1", "32")}
    ml_python = os.environ.get("MLSERVER_PYTHON", str(BENCH / ".venv-mlserver" / "bin" / "python"))
    if Path(ml_python).exists():
        v2 = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": row}]})
        with targets.mlserver(workdir, model_path, ml_python) as url:
            results["MLServer (mlserver-sklearn)"] = {c: load(url, int(c), body=v2.encode()) for c in ("1", "32")}
    rows = [[n, r["1"]["p50_ms"], r["1"]["p99_ms"], r["32"]["rps"], r["32"]["codes"]] for n, r in results.items()]
    text = table("sklearn LogisticRegression (iris), one row per request",
                 ["server", "p50 ms c=1", "p99 ms c=1", "rps c=32", "codes c=32"], rows)
    ratios = {}
    if "MLServer (mlserver-sklearn)" in results:
        ratios["rps c=32 ours / MLServer (target >= 1.5)"] = (
            results["eas (sklearn processor)"]["32"]["rps"] / results["MLServer (mlserver-sklearn)"]["32"]["rps"])
    else:
        text += "\n(MLServer not installed: run `make bench`, which creates bench/.venv-mlserver)"
    return {"results": results, "ratios": ratios, "text": text}


def mlp_model(path: Path, dim: int = 2048, hidden: int = 8192) -> None:
    """A batch-friendly MLP: two dense layers whose weights dominate single-row calls."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((dim, hidden)) / 30).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((hidden, 16)) / 30).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def torch_mlp(path: Path, dim: int = 2048, hidden: int = 8192) -> None:
    """`mlp_model`'s network as TorchScript (`torch.jit.script`), the artefact EAS's pytorch processor takes."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(dim, hidden, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 16, bias=False)).eval()
    torch.jit.script(net).save(str(path))


def compare_batching(workdir: Path, title: str, processor: str, model: Path, concurrency: int,
                     max_batch: int, threads: int = 2, target: str = "") -> dict[str, Any]:
    """One model served twice, rpc.batching off then on, under the same closed-loop load
    (2 worker threads, each model call on `threads` intra-op threads)."""
    body = json.dumps({"instances": [np.random.default_rng(1).standard_normal(2048).round(3).tolist()]}).encode()
    results = {}
    eas = targets.EasServer(workdir)
    with eas.running():
        for mode, on in (("batching off", False), ("batching on", True)):
            name = f"mlp_{processor}_{'on' if on else 'off'}"
            token = eas.create({"name": name, "processor": processor, "model_path": str(model),
                                "model_config": {"intra_op_num_threads": threads},
                                "metadata": {"instance": 1, "cpu": 1, "rpc": {
                                    "batching": on, "max_batch_size": max_batch, "max_batch_timeout": 10,
                                    "worker_threads": 2, "max_queue_size": 256}}})
            results[mode] = load(f"{eas.url}/api/predict/{name}", concurrency, body=body,
                                 headers={"Authorization": token, "Content-Type": "application/json"})
            eas.delete(name)
    rows = [[m, r["rps"], r["p50_ms"], r["p99_ms"], r["codes"]] for m, r in results.items()]
    text = table(title, ["mode", "rps", "p50 ms", "p99 ms", "codes"], rows)
    return {"results": results, "text": text,
            "ratios": {f"rps batching on / off{target}": results["batching on"]["rps"] / results["batching off"]["rps"]}}


def batching(workdir: Path) -> dict[str, Any]:
    mlp_model(workdir / "mlp.onnx")
    return compare_batching(workdir, "ONNX MLP (2048 -> 8192 -> 16, 67 MB of weights) at concurrency 32",
                            "onnx", workdir / "mlp.onnx", concurrency=32, max_batch=32, target=" (target >= 3)")


def batching_torch(workdir: Path) -> dict[str, Any]:
    torch_mlp(workdir / "mlp.pt")
    # One intra-op thread per call: torch's OpenMP pool is per calling thread, so 2 worker
    # threads x 2 intra-op threads would oversubscribe the cores (onnxruntime shares one pool).
    return compare_batching(workdir, "TorchScript MLP (2048 -> 8192 -> 16, 67 MB of weights) at concurrency 16",
                            "pytorch", workdir / "mlp.pt", concurrency=16, max_batch=16, threads=1)


def overload(workdir: Path) -> dict[str, Any]:
    eas = targets.EasServer(workdir)
    code = write_code(workdir, "slow", SLOW_CODE)
    workers, queue = 4, 2
    capacity = workers / 0.02  # requests/s the instance can finish
    with eas.running():
        token = eas.create(python_service("slow", code, rpc={"worker_threads": workers, "max_queue_size": queue}))
        url, auth = f"{eas.url}/api/predict/slow", {"Authorization": token}
        unloaded = load(url, 1, headers=auth)
        offered = load(url, 0, headers=auth, rate=2 * capacity)
    codes = offered["codes"]
    shed = codes.get("450", 0) / max(1, offered["requests"])
    other = {k: v for k, v in codes.items() if k not in ("200", "450", "429")}
    rows = [["unloaded (c=1)", unloaded["rps"], unloaded["p99_ok_ms"], unloaded["codes"]],
            [f"2x capacity offered ({2 * capacity:.0f}/s open loop)", offered["rps"], offered["p99_ok_ms"], codes]]
    text = table(f"overload: 20 ms model, {workers} workers, max_queue_size {queue}",
                 ["load", "rps", "p99 ms of 200s", "codes"], rows)
    text += f"\nshare shed with 450: {shed:.1%}; answers other than 200/450/429: {sum(other.values())}"
    return {"results": {"unloaded": unloaded, "offered": offered}, "text": text,
            "ratios": {"admitted p99 / unloaded p99 (target <= 2)": offered["p99_ok_ms"] / unloaded["p99_ok_ms"],
                       "non 200/450/429 answers (target 0)": float(sum(other.values()))}}


def mirror(workdir: Path, rate: float = 200, rounds: int = 3) -> dict[str, Any]:
    """Primary p99 with and without a 100 % mirror, at an open-loop rate with CPU to spare.

    At a saturating closed loop the shadow's copies take CPU from the primary on any
    machine, so the comparison says nothing about the mirror path itself. Rounds
    alternate (off, on, off, on, ...) so that drift on a shared machine hits both sides.
    """
    eas = targets.EasServer(workdir)
    code = write_code(workdir, "echo", ECHO_CODE)
    runs: dict[str, list[dict[str, Any]]] = {"no mirror": [], "mirror 100 %": []}
    with eas.running():
        token = eas.create(python_service("primary", code))
        eas.create(python_service("shadow", code))
        url, auth = f"{eas.url}/api/predict/primary", {"Authorization": token}
        for _ in range(rounds):
            runs["no mirror"].append(load(url, 0, headers=auth, rate=rate))
            eas.eascmd("mirror", "primary", "shadow", "-p", "100")
            time.sleep(1)
            runs["mirror 100 %"].append(load(url, 0, headers=auth, rate=rate))
            eas.eascmd("mirror", "primary", "--off")
            time.sleep(1)
        metrics = httpx.get(f"{eas.url}/metrics").text
    shadow = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("eas_instance_requests_total") and 'service="shadow"' in line)
    mirrored = sum(r["requests"] for r in runs["mirror 100 %"])
    p99 = {mode: statistics.median(r["p99_ms"] for r in rs) for mode, rs in runs.items()}
    rows = [[mode, statistics.median(r["rps"] for r in rs), statistics.median(r["p50_ms"] for r in rs),
             p99[mode], sum(r["codes"].get("200", 0) for r in rs)] for mode, rs in runs.items()]
    text = table(f"mirror: primary at {rate:.0f} req/s open loop, median of {rounds} alternating rounds",
                 ["mode", "rps", "p50 ms", "p99 ms", "200s"], rows)
    text += f"\nshadow answered {shadow:.0f} copies ({mirrored} primary requests measured with the mirror on, plus warm-up)"
    return {"results": {"runs": runs, "shadow_answers": shadow}, "text": text,
            "ratios": {"primary p99 with / without mirror (target <= 1.10)": p99["mirror 100 %"] / p99["no mirror"]}}


def wake(workdir: Path) -> dict[str, Any]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), workdir / "wake.joblib")
    eas = targets.EasServer(workdir)
    times = []
    with eas.running():
        token = eas.create({"name": "sleeper", "processor": "sklearn", "model_path": str(workdir / "wake.joblib"),
                            "sleep": {"idle_seconds": 2}, "metadata": {"instance": 1, "cpu": 1}})
        body = json.dumps({"instances": [x[0].tolist()]})
        for _ in range(3):
            deadline = time.monotonic() + 60
            while json.loads(eas.eascmd("desc", "sleeper", "--json"))["Status"] != "Sleeping":
                if time.monotonic() > deadline:
                    raise TimeoutError("service never slept")
                time.sleep(0.5)

            async def burst() -> list[tuple[int, float]]:
                async with httpx.AsyncClient(timeout=90, headers={"Authorization": token}) as client:
                    t0 = time.perf_counter()

                    async def one() -> tuple[int, float]:
                        r = await client.post(f"{eas.url}/api/predict/sleeper", content=body)
                        return r.status_code, time.perf_counter() - t0

                    return await asyncio.gather(*(one() for _ in range(20)))

            answers = asyncio.run(burst())
            assert all(code == 200 for code, _ in answers), answers
            times.append(min(t for _, t in answers))
    text = table("wake: sleeping sklearn service, burst of 20 concurrent requests",
                 ["run", "first answer s"], [[i + 1, t] for i, t in enumerate(times)])
    return {"results": {"first_answer_s": times}, "text": text,
            "ratios": {"median time to first answer, s (goal < 5)": statistics.median(times)}}


STREAM_CODE = '''
import time
class Stream:
    def initialize(self):
        pass
    def process(self, data):
        def pieces():
            yield "data: first\\n\\n"
            for i in range(4):
                time.sleep(0.02)
                yield f"data: {i}\\n\\n"
        return pieces()
'''


def _streamed_timings(url: str, token: str, count: int) -> tuple[list[float], list[float]]:
    """`count` streamed answers one after another on one keep-alive connection: time to
    the first body byte and to the end of each, in ms (http.client: little client overhead)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    first, whole = [], []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("POST", parts.path, body=b"{}", headers={"Authorization": token})
            answer = conn.getresponse()
            assert answer.status == 200, answer.status
            assert answer.read1(), "no first chunk"
            first.append((time.perf_counter() - started) * 1000)
            answer.read()
            whole.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return first, whole


def ttfb(workdir: Path, count: int = 200) -> dict[str, Any]:
    """A python processor that yields a first server-sent event at once, then four more
    20 ms apart: time to first byte and to the end, through the gateway and directly."""
    eas = targets.EasServer(workdir)
    results: dict[str, dict[str, float]] = {}
    with eas.running():
        token = eas.create(python_service("stream", write_code(workdir, "stream", STREAM_CODE)))
        items = httpx.get(f"{eas.url}/api/v1/servicediscovery/upstreams/stream").json()["endpoints"]["items"]
        urls = {"eas gateway": f"{eas.url}/api/predict/stream",
                "eas instance (DIRECT)": f"http://{items[0]['ip']}:{items[0]['port']}/api/predict/stream"}
        for name, url in urls.items():
            _streamed_timings(url, token, 20)  # warm-up
            first, whole = _streamed_timings(url, token, count)
            results[name] = {"ttfb_p50_ms": statistics.median(first),
                             "ttfb_p99_ms": float(np.percentile(first, 99)),
                             "total_p50_ms": statistics.median(whole)}
    rows = [[n, r["ttfb_p50_ms"], r["ttfb_p99_ms"], r["total_p50_ms"]] for n, r in results.items()]
    text = table(f"ttfb: a streamed answer (first event at once, 4 more 20 ms apart), {count} in a row",
                 ["target", "ttfb p50 ms", "ttfb p99 ms", "total p50 ms"], rows)
    gateway, direct = results["eas gateway"], results["eas instance (DIRECT)"]
    return {"results": results, "text": text, "ratios": {
        "ttfb p50 added by the gateway, ms": gateway["ttfb_p50_ms"] - direct["ttfb_p50_ms"],
        "total p50 added by the gateway, ms": gateway["total_p50_ms"] - direct["total_p50_ms"]}}


def processors(workdir: Path) -> dict[str, Any]:
    """In-process framework call vs the same request through the platform (c=1 p50)."""
    from bench import models

    rows, results = [], {}
    eas = targets.EasServer(workdir)
    with eas.running():
        for case in models.cases(workdir):
            t_in = case.in_process_ms()
            token = eas.create(case.spec)
            through = load(f"{eas.url}/api/predict/{case.spec['name']}", 1, seconds=3, body=case.body,
                           headers={"Authorization": token, "Content-Type": case.content_type})
            eas.delete(case.spec["name"])
            results[case.name] = {"in_process_ms": t_in, "platform_p50_ms": through["p50_ms"],
                                  "codes": through["codes"]}
            rows.append([case.name, t_in, through["p50_ms"], through["p50_ms"] - t_in, through["codes"]])
    text = table("per processor: one request, in-process call vs through eas-server (p50 ms)",
                 ["processor", "in-process", "platform", "overhead", "codes"], rows)
    return {"results": results, "text": text, "ratios": {}}



def queue(workdir: Path, requests: int = 2000) -> dict[str, Any]:
    """Put and get on a sink nobody drains (the store's cost alone), then `requests` put
    on the input queue of an echo service of 1 instance x 8 workers and drained to the
    sink (end to end), then one request at a time: put, then a long-polling get by its
    request id on the sink (the round trip a client sees)."""
    eas = targets.EasServer(workdir)
    results: dict[str, Any] = {}
    with eas.running():
        spec = python_service("qecho", write_code(workdir, "qecho", ECHO_CODE), workers=8)
        spec["metadata"]["type"] = "Async"
        token = eas.create(spec)
        auth = {"Authorization": token}
        sink = f"{eas.url}/api/predict/qecho/sink"
        for c in (1, 16):
            results[f"put c={c}"] = load(sink, c, body=b'{"x": 1}', headers=auth)
        filled = int(httpx.get(sink, params={"_attrs_": "true"}, headers=auth).json()["stream.length"])
        get_url = f"{sink}?_index_=0&_length_=1&_auto_delete_=true&_timeout_=0s"
        # At most as many gets as entries, so every get takes one (an empty get is cheaper).
        results["get+delete c=16"] = load(get_url, 16, seconds=60, headers=auth, method="GET",
                                          count=filled, warmup="0s")
        httpx.delete(sink, params={"_index_": str(10**12), "_trunc_": "true"}, headers=auth)
        source = f"{eas.url}/api/predict/qecho"
        started = time.perf_counter()
        load(source, 16, seconds=60, body=b"x", headers=auth, count=requests, warmup="0s")
        while int(httpx.get(sink, params={"_attrs_": "true"}, headers=auth).json()["stream.length"]) < requests:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        results["end to end"] = {"requests": requests, "seconds": seconds, "rps": requests / seconds}
        httpx.delete(sink, params={"_index_": str(10**12), "_trunc_": "true"}, headers=auth)
        trips = []
        with httpx.Client(timeout=60, headers=auth) as client:
            for _ in range(100):
                t0 = time.perf_counter()
                rid = client.post(source, content=b"x").headers["X-Eas-Queueservice-Request-Id"]
                got = client.get(sink, params={"requestId": rid, "_timeout_": "30s", "_auto_delete_": "true"},
                                 headers={"Accept": "application/vnd.google.protobuf"})
                assert got.status_code == 200 and got.content, got.text
                trips.append((time.perf_counter() - t0) * 1000)
        trips.sort()
        results["round trip c=1"] = {"p50_ms": trips[50], "p99_ms": trips[98]}
    rows = [[name, r.get("rps", 0.0), r.get("p50_ms", 0.0), r.get("p99_ms", 0.0)] for name, r in results.items()]
    text = table("queue (SQLite store): requests/s and latency (ms)", ["operation", "rps", "p50", "p99"], rows)
    ratios = {"end to end rps / put rps c=16 (the share of the store's put rate the dispatch keeps)":
              results["end to end"]["rps"] / results["put c=16"]["rps"]}
    return {"results": results, "ratios": ratios, "text": text}


SCENARIOS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "echo": echo, "sklearn": sklearn, "batching": batching, "batching_torch": batching_torch, "overload": overload,
    "mirror": mirror, "wake": wake, "processors": processors, "ttfb": ttfb, "queue": queue,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help="which to run (default: all)")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (choose from {', '.join(SCENARIOS)})")
    if not LOADGEN.exists():
        parser.error("bench/loadgen/loadgen is missing: run `make bench` (it builds it with go build)")
    workdir = Path(tempfile.mkdtemp(prefix="eas-bench-"))
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "platform": platform.platform()},
                              "seconds_per_point": DURATION, "scenarios": {}}
    try:
        for name in args.scenarios:
            print(f"== {name}", flush=True)
            started = time.monotonic()
            outcome = SCENARIOS[name](workdir)
            print(outcome["text"])
            for label, value in outcome["ratios"].items():
                print(f"  {label}: {value:.2f}")
            outcome["wall_s"] = time.monotonic() - started
            report["scenarios"][name] = {k: v for k, v in outcome.items() if k != "text"}
    finally:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nsaved {out}")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH.parent))
    main()
