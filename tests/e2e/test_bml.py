"""Baidu BML users move here unchanged: BML's own service code, BML's API, batch
prediction jobs and data backflow, through a real eas-server on a real Ray.

The service code is BML's published samples (tests/e2e/fixtures/bml/, README there
says what had to differ), deployed with `processor_type: python` and a `bml` block;
the models they serve are trained or built here, and answers are checked against the
frameworks' own in-process results.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.harness import EasServer, write_json
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "bml"


def _wait(what: str, check: Any, timeout: float = 120, every: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def _png(seed: int, size: int, mode: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def _load_fixture(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bml_fixture_{name}", FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(root: Path) -> dict[str, Any]:
    """The four models BML's samples load, each in its own folder, and what they answer here."""
    import paddle
    import torch
    from paddle.static import InputSpec
    from sklearn.linear_model import LogisticRegression
    from xgboost import XGBRegressor

    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 4)).round(4)
    built: dict[str, Any] = {"rows": x[:5]}

    (root / "sklearn").mkdir()
    clf = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))
    (root / "sklearn" / "model.pkl").write_bytes(pickle.dumps(clf))
    built["sklearn"] = clf

    (root / "xgboost").mkdir()
    reg = XGBRegressor(n_estimators=8, max_depth=3).fit(x, x[:, 0] * 3 + x[:, 2])
    (root / "xgboost" / "model.pkl").write_bytes(pickle.dumps(reg))
    built["xgboost"] = reg

    (root / "pytorch").mkdir()
    torch.manual_seed(3)
    mnist = _load_fixture("pytorch_mnist")
    state_dir = root / "pytorch"
    seed_net = _mnist_net()
    torch.save(seed_net.state_dict(), state_dir / "model.pkl")
    model = mnist.model_fn(str(state_dir)).eval()
    images = [_png(i, 32, "L") for i in range(3)]
    request = {"instances": [{"data": base64.b64encode(img).decode()} for img in images]}
    with torch.no_grad():
        built["pytorch"] = model(mnist.input_fn(request)).numpy()
    built["pytorch_request"] = request

    (root / "paddle").mkdir()
    paddle.seed(3)

    class Tiny(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.pool = paddle.nn.AdaptiveAvgPool2D(2)
            self.fc = paddle.nn.Linear(12, 5)

        def forward(self, x: Any) -> Any:
            return paddle.nn.functional.softmax(self.fc(paddle.flatten(self.pool(x), 1)))

    tiny = Tiny()
    tiny.eval()
    paddle.jit.save(tiny, str(root / "paddle" / "model"), input_spec=[InputSpec([None, 3, 224, 224], "float32", "x")])
    (root / "paddle" / "label_list.txt").write_text("0 cat\n1 dog\n2 fox\n3 owl\n4 yak\n")
    cls = _load_fixture("paddleclas_wrapper")
    wrapper = cls.PredictWrapper(str(root / "paddle"))
    image = _png(9, 300, "RGB")
    data, _, context = wrapper.preprocess({"image": base64.b64encode(image).decode(), "top_num": 3})
    with paddle.no_grad():
        out = tiny(paddle.to_tensor(data["x"])).numpy()
    built["paddle"] = wrapper.postprocess([out], context)
    built["paddle_image"] = image
    return built


def _mnist_net() -> Any:
    """BML's MNIST `Net` (the sample builds it inside model_fn), for weights to load."""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
            self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, 10)

    return Net()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible store (moto's server) for object-storage job inputs."""
    store = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: S3Server):
    """This module's eas-server, with the object store's settings in its environment."""
    srv = EasServer(tmp_path_factory.mktemp("eas-data"), env=s3.env).start()
    yield srv
    srv.stop()


SERVICES = {
    "bml_sklearn": ("sklearn_wrapper.py", "sklearn", {"framework": "sklearn"}),
    "bml_xgb": ("xgboost_wrapper.py", "xgboost", {"framework": "xgboost"}),
    "bml_torch": ("pytorch_mnist.py", "pytorch", {"framework": "pytorch"}),
    "bml_paddle": ("paddleclas_wrapper.py", "paddle", {"framework": "paddleclas"}),
}


@pytest.fixture(scope="module")
def bml(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bml")
    built = _build(root)

    def create(name: str) -> tuple[str, Any]:
        code, model, block = SERVICES[name]
        spec: dict[str, Any] = {"name": name, "processor_type": "python", "processor_path": str(FIXTURES),
                                "processor_entry": code, "model_path": str(root / model), "bml": block,
                                "metadata": {"instance": 1, "cpu": 0.5}}
        if name == "bml_sklearn":
            spec["backflow"] = {"ratio": 0.1, "max_body_bytes": 4096}
        if name == "bml_torch":  # BML's QPS limit error (18) is checked on this one
            spec["metadata"]["rpc"] = {"rate_limit": 2}
        return name, server.eascmd("create", str(write_json(root / f"{name}.json", spec)), check=False)

    def tabular() -> tuple[str, Any]:  # a built-in processor in BML mode: BML's tabular API
        spec = {"name": "bml_table", "processor": "sklearn", "model_path": str(root / "sklearn" / "model.pkl"),
                "model_config": {"feature_names": ["sepal_length", "sepal_width", "petal_length", "petal_width"]},
                "bml": {"framework": "sklearn"}, "metadata": {"instance": 1, "cpu": 0.5}}
        return "bml_table", server.eascmd("create", str(write_json(root / "bml_table.json", spec)), check=False)

    with ThreadPoolExecutor(len(SERVICES) + 1) as pool:
        table = pool.submit(tabular)
        created = dict(pool.map(create, SERVICES))
        created.update([table.result()])
    for name, res in created.items():
        assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}\n{server.log_tail()}"
    with server.admin() as client:
        tokens = {n: client.get(f"/api/v2/services/local/{n}").json()["AccessToken"] for n in created}
    return {**built, "tokens": tokens, "root": root}


def _bml_post(server, name: str, body: Any, token: str | None, query: bool = True) -> httpx.Response:
    params = {"access_token": token} if (token and query) else {}
    headers = {"Content-Type": "application/json"}
    if token and not query:
        headers["Authorization"] = token
    return httpx.post(f"{server.url}/api/predict/{name}", params=params, headers=headers,
                      content=body if isinstance(body, bytes) else json.dumps(body), timeout=30)


def test_sklearn_sample_answers_bml_envelopes(server, bml: dict[str, Any]) -> None:
    rows, clf, token = bml["rows"], bml["sklearn"], bml["tokens"]["bml_sklearn"]
    body = {"instances": [{"features": r} for r in rows.tolist()]}
    resp = _bml_post(server, "bml_sklearn", body, token)  # ?access_token=, BML's way
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert isinstance(answer["log_id"], int) and answer["log_id"] > 0
    assert answer["result"] == {"labels": [{"categories": [int(v)]} for v in clf.predict(rows)]}
    header = _bml_post(server, "bml_sklearn", body, token, query=False)  # the token header still works
    assert header.json()["result"] == answer["result"] and header.json()["log_id"] != answer["log_id"]

    missing = _bml_post(server, "bml_sklearn", {"instances": [{"feature": [1, 2, 3, 4]}]}, token)
    assert missing.status_code == 400
    error = missing.json()
    assert set(error) == {"log_id", "error_code", "error_msg"}
    assert (error["error_code"], error["error_msg"]) == (336006, "Failed decoding input")

    bad_json = _bml_post(server, "bml_sklearn", b'{"instances": [', token)
    assert bad_json.json()["error_code"] == 336002
    wrong = _bml_post(server, "bml_sklearn", body, "not-the-token-at-all")
    assert wrong.status_code == 401 and wrong.json()["error_code"] == 110
    assert _bml_post(server, "bml_sklearn", body, None).json()["error_code"] == 100


def test_tabular_api_answers_batch_results(server, bml: dict[str, Any]) -> None:
    rows, clf = bml["rows"], bml["sklearn"]
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    data = [dict(zip(names, r)) for r in rows.tolist()]
    resp = _bml_post(server, "bml_table", {"include_req": True, "data": data}, bml["tokens"]["bml_table"])
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert isinstance(answer["log_id"], int)
    assert answer["batch_results"] == [{**row, "prediction": int(p)} for row, p in zip(data, clf.predict(rows))]
    # The built-in processor's own API in BML mode: its answer under "result", as BML's framework APIs.
    framework = _bml_post(server, "bml_table", {"instances": rows.tolist()}, bml["tokens"]["bml_table"]).json()
    assert set(framework) == {"log_id", "result"}
    assert framework["result"] == {"predictions": clf.predict(rows).tolist()}


def test_xgboost_sample_regression_values(server, bml: dict[str, Any]) -> None:
    rows, reg = bml["rows"], bml["xgboost"]
    resp = _bml_post(server, "bml_xgb", {"instances": [{"features": r} for r in rows.tolist()]},
                     bml["tokens"]["bml_xgb"])
    assert resp.status_code == 200, resp.text
    got = [label["categories"] for label in resp.json()["result"]["labels"]]
    np.testing.assert_allclose(np.asarray(got).ravel(), reg.predict(rows), rtol=1e-6)


def test_pytorch_sample_model_fn_input_fn_output_fn(server, bml: dict[str, Any]) -> None:
    resp = _bml_post(server, "bml_torch", bml["pytorch_request"], bml["tokens"]["bml_torch"])
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(np.asarray(resp.json()["result"]), bml["pytorch"], rtol=1e-5, atol=1e-6)
    # Over rpc.rate_limit (2/s, one second of burst): BML's "Open api qps request limit reached".
    answers = [_bml_post(server, "bml_torch", bml["pytorch_request"], bml["tokens"]["bml_torch"]) for _ in range(6)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(a.json()["error_code"] == 18 and "log_id" in a.json() for a in limited)
    assert limited[0].headers["Retry-After"]


def test_paddleclas_wrapper_without_predict_runs_the_platform_model(server, bml: dict[str, Any]) -> None:
    token = bml["tokens"]["bml_paddle"]
    body = {"image": base64.b64encode(bml["paddle_image"]).decode(), "top_num": 3}
    resp = _bml_post(server, "bml_paddle", body, token)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]  # BML's rule: a list from postprocess is {"results": [...]}
    assert [r["name"] for r in results] == [r["name"] for r in bml["paddle"]]
    np.testing.assert_allclose([r["score"] for r in results], [r["score"] for r in bml["paddle"]], rtol=1e-4)
    missing = _bml_post(server, "bml_paddle", {"img": "x"}, token).json()
    assert missing["error_msg"] == "Missing required parameter" and missing["error_code"] == 336001


def test_backflow_captures_a_tenth_and_exports_json_lines(server, bml: dict[str, Any], tmp_path: Path) -> None:
    token, rows = bml["tokens"]["bml_sklearn"], bml["rows"]
    tag = "backflow-run"
    bodies = [json.dumps({"tag": tag, "n": i, "instances": [{"features": rows[i % 5].tolist()}]}) for i in range(2000)]
    with httpx.Client(timeout=30) as client:
        def send(body: str) -> int:
            return client.post(f"{server.url}/api/predict/bml_sklearn", params={"access_token": token},
                               content=body).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(send, bodies))
    assert statuses.count(200) == 2000
    out = tmp_path / "backflow.jsonl"

    def exported() -> list[dict[str, Any]]:
        server.eascmd("backflow", "export", "bml_sklearn", "-o", str(out))
        return [json.loads(line) for line in out.read_text().splitlines()]

    def ours() -> list[dict[str, Any]]:
        return [r for r in exported() if f'"tag": "{tag}"' in r["request"].get("body", "")]

    # Captured copies are written by the server a moment later: wait until the count is still.
    counts: list[int] = []
    _wait("backflow records settle", lambda: counts.append(len(ours())) or (len(counts) > 2 and counts[-1] == counts[-3]),
          timeout=60, every=0.7)
    records = ours()
    assert 130 <= len(records) <= 270, len(records)  # 10 % of 2000, within five standard deviations
    for record in records:
        assert record["status"] == 200 and record["service"] == "bml_sklearn"
        answer = json.loads(record["answer"]["body"])
        assert "log_id" in answer and answer["result"]["labels"][0]["categories"]
        assert token not in json.dumps(record)  # the access_token is never kept
    listed = server.eascmd("backflow", "ls", "bml_sklearn", "--limit", "3").stdout
    assert "REQUEST_ID" in listed and "records" in listed
    one = json.loads(server.eascmd("backflow", "get", "bml_sklearn", str(records[0]["id"])).stdout)
    assert one["request_id"] == records[0]["request_id"]


def _desc(server, name: str) -> dict[str, Any]:
    return json.loads(server.eascmd("job", "desc", name, "--json").stdout)


def test_scheduled_job_fires_at_its_start(server, bml: dict[str, Any], tmp_path: Path) -> None:
    items = tmp_path / "few.jsonl"
    items.write_text("".join(json.dumps({"instances": [{"features": r}]}) + "\n" for r in bml["rows"].tolist()))
    start = time.time() + 4
    spec = {"Name": "every-minute", "Service": "bml_xgb", "Input": str(items),
            "Schedule": {"Every": "minute", "Start": start}}
    server.eascmd("job", "create", str(write_json(tmp_path / "job.json", spec)))
    assert _desc(server, "every-minute")["State"] == "Scheduled"
    done = _wait("the scheduled run", lambda: (d := _desc(server, "every-minute"))["Run"] == 1
                 and d["State"] == "Scheduled" and d)
    assert time.time() >= start and done["NextRun"] == pytest.approx(start + 60)
    assert done["Done"] == 5 and done["Failed"] == 0
    lines = [json.loads(x) for x in (tmp_path / "few.jsonl.out.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == list(range(5))
    listed = server.eascmd("job", "ls").stdout
    assert "every-minute" in listed and "Scheduled" in listed
    server.eascmd("job", "delete", "every-minute", "-y")


def test_csv_and_image_folder_jobs(server, bml: dict[str, Any], tmp_path: Path) -> None:
    rows, clf = bml["rows"], bml["sklearn"]
    table = tmp_path / "rows.csv"
    table.write_text("sepal_length,sepal_width,petal_length,petal_width\n"
                     + "".join(",".join(str(v) for v in r) + "\n" for r in rows.tolist()))
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(bml["paddle_image"])
    (images / "b.txt").write_bytes(b"not an image")  # a per-item failure, listed
    for name, service, source in (("table", "bml_table", table), ("photos", "bml_paddle", images)):
        spec = {"Name": name, "Service": service, "Input": str(source)}
        server.eascmd("job", "create", str(write_json(tmp_path / f"{name}.json", spec)))
    table_job = _wait("the CSV job", lambda: (d := _desc(server, "table"))["State"] == "Succeeded" and d)
    assert (table_job["Done"], table_job["Failed"]) == (5, 0)
    out = [json.loads(x) for x in (tmp_path / "rows.csv.out.jsonl").read_text().splitlines()]
    assert [x["output"]["batch_results"][0]["prediction"] for x in out] == clf.predict(rows).tolist()
    photos = _wait("the folder job", lambda: (d := _desc(server, "photos"))["State"] == "Succeeded" and d)
    assert (photos["Done"], photos["Failed"]) == (2, 1) and photos["Failures"][0]["Item"] == "b.txt"
    answer = json.loads((tmp_path / "images_output" / "a.png.json").read_text())
    top = [r["name"] for r in answer["output"]["results"]]  # DEFAULT_TOP_NUM: all 5 labels
    assert len(top) == 5 and top[:3] == [r["name"] for r in bml["paddle"]]
    failed = json.loads((tmp_path / "images_output" / "b.txt.json").read_text())
    assert failed["status"] == 400 and "error_code" in failed["output"]
    shown = server.eascmd("job", "desc", "photos").stdout
    assert "b.txt" in shown and "2/2" in shown


def test_job_with_its_own_service_removes_it_when_done(server, bml: dict[str, Any], tmp_path: Path) -> None:
    rows, clf = bml["rows"], bml["sklearn"]
    items = tmp_path / "own.jsonl"
    items.write_text("".join(json.dumps({"instances": [{"features": r}]}) + "\n" for r in rows.tolist()))
    service = {"processor_type": "python", "processor_path": str(FIXTURES), "processor_entry": "sklearn_wrapper.py",
               "model_path": str(bml["root"] / "sklearn"), "bml": {"framework": "sklearn"},
               "metadata": {"instance": 1, "cpu": 0.5}}
    spec = {"Name": "own", "ServiceConfig": service, "Input": str(items)}
    server.eascmd("job", "create", str(write_json(tmp_path / "own.json", spec)))
    done = _wait("the job", lambda: (d := _desc(server, "own"))["State"] == "Succeeded" and d, timeout=180)
    assert done["Service"] == "job_own" and (done["Done"], done["Failed"]) == (5, 0)
    out = [json.loads(x) for x in (tmp_path / "own.jsonl.out.jsonl").read_text().splitlines()]
    assert [x["output"]["result"]["labels"][0]["categories"][0] for x in out] == clf.predict(rows).tolist()
    with server.admin() as client:  # the job's service is gone with the job's end
        _wait("the job's service deleted",
              lambda: client.get("/api/v2/services/local/job_own").status_code == 404, timeout=120)


def test_job_over_object_storage_writes_outputs_next_to_it(server, bml: dict[str, Any], s3: S3Server) -> None:
    rows, reg = bml["rows"], bml["xgboost"]
    client = s3.client()
    client.create_bucket(Bucket="bml-data")
    body = "".join(json.dumps({"instances": [{"features": r}]}) + "\n" for r in rows.tolist())
    client.put_object(Bucket="bml-data", Key="batch/items.jsonl", Body=body.encode())
    client.put_object(Bucket="bml-data", Key="photos/a.png", Body=bml["paddle_image"])
    with server.admin() as admin:
        for name, service, source in (("remote", "bml_xgb", "oss://bml-data/batch/items.jsonl"),
                                      ("remote_photos", "bml_paddle", "oss://bml-data/photos/")):
            made = admin.post("/api/v2/ext/jobs", json={"Name": name, "Service": service, "Input": source})
            assert made.status_code == 200, made.text
        for name in ("remote", "remote_photos"):
            done = _wait(name, lambda: (d := admin.get(f"/api/v2/ext/jobs/{name}").json())["State"]
                         in ("Succeeded", "Failed") and d)
            assert done["State"] == "Succeeded" and done["Failed"] == 0, done
    assert done["Output"] == "oss://bml-data/photos_output/"
    out = client.get_object(Bucket="bml-data", Key="batch/items.jsonl.out.jsonl")["Body"].read().decode()
    got = [json.loads(x)["output"]["result"]["labels"][0]["categories"][0] for x in out.splitlines()]
    np.testing.assert_allclose(got, reg.predict(rows), rtol=1e-6)
    photo = json.loads(client.get_object(Bucket="bml-data", Key="photos_output/a.png.json")["Body"].read())
    assert photo["status"] == 200 and photo["output"]["results"]


def _served(server, name: str) -> int:
    """Requests this server's gateway answered 200 for `name` since it started."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return int(sum(float(v) for labels, v in re.findall(r'^eas_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M)
                   if f'service="{name}"' in labels and 'code="200"' in labels))


def test_batch_job_survives_kill9_without_redoing_items(server, bml: dict[str, Any], tmp_path: Path) -> None:
    reg = bml["xgboost"]
    rows = np.random.default_rng(4).normal(size=(1000, 4)).round(4)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"instances": [{"features": r}]}) + "\n" for r in rows.tolist()))
    spec = {"Name": "big", "Service": "bml_xgb", "Input": str(items), "Concurrency": 1}
    server.eascmd("job", "create", str(write_json(tmp_path / "big.json", spec)))
    with server.admin() as client:  # polled through the API: eascmd's start-up is slower than the job
        _wait("the job half way", lambda: client.get("/api/v2/ext/jobs/big").json()["Done"] >= 150, every=0.02)
    server.kill9()
    server.start()
    before = _desc(server, "big")["Done"]
    assert 0 < before < 1000
    final = _wait("the job after the restart", lambda: (d := _desc(server, "big"))["State"] == "Succeeded" and d,
                  timeout=300, every=0.5)
    assert (final["Done"], final["Failed"], final["Total"]) == (1000, 0, 1000)
    redone = _served(server, "bml_xgb") - (1000 - before)
    assert 0 <= redone <= 32, redone  # at most the chunk in flight at the kill (recorded ones never)
    out = [json.loads(x) for x in (tmp_path / "items.jsonl.out.jsonl").read_text().splitlines()]
    assert [x["index"] for x in out] == list(range(1000))
    got = np.asarray([x["output"]["result"]["labels"][0]["categories"][0] for x in out])
    np.testing.assert_allclose(got, reg.predict(rows), rtol=1e-6)
