"""One bad request fails only itself, also inside a server-side batch (docs/security.md).

A hostile body makes decoders raise more than ValueError: deeply nested JSON is a
RecursionError in `json` (orjson stops at 1024 levels), a torn protobuf a DecodeError.
Each is that request's 400; the well-formed requests batched with it are answered.
Should a batch function raise anyway, the batcher runs the batch again one request at
a time so only the culprit fails.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from eas.instance import oip as instance_oip
from eas.instance.batching import Batcher
from eas.instance.runtime import ServiceRuntime
from processors import ModelContext, Request, Response, tfproto
from processors.onnx import OnnxProcessor
from processors.sklearn import SklearnProcessor

X = np.random.default_rng(1).random((16, 3)).astype(np.float32)
GOOD = json.dumps({"instances": X[:2].tolist()}).encode()
#: Past both JSON decoders' depth limits: orjson refuses it, `json` raises RecursionError.
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_INSTANCES = b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"
SMALL = 16 * 1024 * 1024


def statuses(answers: Sequence[Response]) -> list[int]:
    return [a.status for a in answers]


def message(answer: Response) -> str:
    return json.loads(answer.body)["message"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    joblib.dump(model, root / "model.joblib")
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(
        to_onnx(model, X[:1], options={id(model): {"zipmap": False}}).SerializeToString())
    return root


def loaded(cls, path: Path):  # noqa: ANN001, ANN201
    processor = cls(ModelContext(model_dir=str(path)))
    processor.load()
    return processor


@pytest.mark.parametrize("bad", [DEEP, DEEP_INSTANCES, b'{"instances": [[1, 2, 3]], "x": "\xff"}',
                                 b"\xff\xfe[", b'{"instances": 1e999999}'])
def test_tabular_batch_fails_only_the_bad_request(model_dir: Path, bad: bytes) -> None:
    processor = loaded(SklearnProcessor, model_dir)
    tracemalloc.start()
    try:
        answers = processor.predict_batch([Request(GOOD, request_id="a"), Request(bad, request_id="b"),
                                           Request(GOOD, request_id="c")])
        used = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert statuses(answers) == [200, 400, 200], [a.body[:200] for a in answers]
    alone = json.loads(processor.predict(Request(GOOD)).body)
    assert json.loads(answers[0].body) == json.loads(answers[2].body) == alone
    assert json.loads(answers[1].body)["request_id"] == "b"
    assert used < SMALL


def test_deep_nesting_is_a_clear_400(model_dir: Path) -> None:
    processor = loaded(SklearnProcessor, model_dir)
    (answer,) = processor.predict_batch([Request(DEEP)])
    assert answer.status == 400 and "nests too deeply" in message(answer)
    (answer,) = processor.predict_batch([Request(DEEP_INSTANCES)])
    assert answer.status == 400 and "nests too deeply" in message(answer), message(answer)


def test_gbm_batches_isolate_bad_requests(tmp_path: Path) -> None:
    from processors import create_processor
    from tests.support.models import build_lightgbm, build_xgboost

    for build in (build_xgboost, build_lightgbm):
        built = build(tmp_path / build.__name__)
        processor = create_processor(built.service("t"), model_dir=str(built.model_path))
        answers = processor.predict_batch([Request(built.body), Request(DEEP), Request(built.body)])
        assert statuses(answers) == [200, 400, 200], build.__name__


def test_onnx_batch_fails_only_the_bad_request(model_dir: Path) -> None:
    processor = loaded(OnnxProcessor, model_dir / "onnx")
    amplifying = tfproto.PredictRequest()
    amplifying.inputs["X"].dtype = tfproto.DT_FLOAT
    amplifying.inputs["X"].array_shape.dim.extend([50_000_000, 3])
    amplifying.inputs["X"].float_val.append(1.0)
    tracemalloc.start()
    try:
        answers = processor.predict_batch([
            Request(GOOD), Request(DEEP, content_type="application/json"), Request(GOOD),
            Request(DEEP_INSTANCES), Request(amplifying.SerializeToString()), Request(b"\x0a\xff\xff\xff"),
        ])
        used = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert statuses(answers) == [200, 400, 200, 400, 413, 400], [a.body[:200] for a in answers]
    assert "nests too deeply" in message(answers[1]) and "nests too deeply" in message(answers[3])
    assert "max_request_elements" in message(answers[4])
    assert used < SMALL


def test_v2_batch_fails_only_the_bad_request(model_dir: Path) -> None:
    processor = loaded(OnnxProcessor, model_dir / "onnx")

    def call(data: object, shape: list[int]) -> Request:
        body = json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": shape, "data": data}]})
        return Request(body.encode(), content_type="application/json")

    good = call(X[:2].ravel().tolist(), [2, 3])
    deep = Request(b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1], "data": '
                   + b"[" * 5000 + b"]" * 5000 + b"}]}", content_type="application/json")
    huge = call([1.0], [2**32, 2**32])
    ranked = call([1.0], [1] * 70)
    answers = instance_oip.infer_batch(processor, "m", [good, deep, good, huge, ranked])
    assert statuses(answers) == [200, 400, 200, 413, 400], [a.body[:200] for a in answers]
    assert "nests too deeply" in message(answers[1])
    assert json.loads(answers[0].body)["outputs"] == json.loads(answers[2].body)["outputs"]


def run_batch(fn, bodies: list[bytes]) -> tuple[list[object], Batcher]:  # noqa: ANN001
    """Submit `bodies` at once to a Batcher over `fn`; each caller's answer or exception."""
    pool = ThreadPoolExecutor(2)
    batcher = Batcher(fn, pool, workers=1, max_size=16, timeout_s=0.05)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit(Request(b)) for b in bodies), return_exceptions=True)

    try:
        return asyncio.run(main()), batcher
    finally:
        batcher.close()
        pool.shutdown()


def test_batcher_retries_a_raising_batch_one_by_one() -> None:
    calls: list[int] = []

    def fn(requests: Sequence[Request]) -> list[Response]:
        calls.append(len(requests))
        if any(r.body == b"bad" for r in requests):
            raise RecursionError("maximum recursion depth exceeded")
        return [Response(b"ok:" + r.body) for r in requests]

    outcomes, batcher = run_batch(fn, [b"1", b"bad", b"2"])
    assert [o.body for o in outcomes if isinstance(o, Response)] == [b"ok:1", b"ok:2"]
    assert isinstance(outcomes[1], RecursionError)
    assert calls == [3, 1, 1, 1] and batcher.size_counts == {3: 1}


def test_batcher_refuses_an_answer_list_that_does_not_line_up() -> None:
    def fn(requests: Sequence[Request]) -> list[Response]:
        return [Response(b"ok")] if len(requests) > 1 else [Response(b"alone:" + requests[0].body)]

    outcomes, _ = run_batch(fn, [b"1", b"2", b"3"])
    assert [o.body for o in outcomes] == [b"alone:1", b"alone:2", b"alone:3"]  # nobody hangs


def test_runtime_batch_with_a_hostile_body(model_dir: Path, tmp_path: Path) -> None:
    """Through the instance runtime's batched lane, as requests arrive together."""
    runtime = ServiceRuntime({"name": "iris", "processor": "sklearn", "model_path": str(model_dir / "model.joblib"),
                              "metadata": {"instance": 1, "rpc": {"batching": True, "max_batch_size": 8,
                                                                  "max_batch_timeout": 50}}}, str(tmp_path))

    async def main() -> list[Response]:
        bodies = [GOOD, DEEP, GOOD, DEEP_INSTANCES, GOOD]
        return await asyncio.gather(*(runtime.predict(Request(b, request_id=str(i))) for i, b in enumerate(bodies)))

    try:
        answers = asyncio.run(main())
    finally:
        runtime.close()
    assert statuses(answers) == [200, 400, 200, 400, 200]
    assert "nests too deeply" in message(answers[1])
    assert max(runtime.batch_sizes()) > 1  # they did share a batch
