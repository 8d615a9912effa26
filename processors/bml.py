"""Baidu BML user-code styles, served with `processor_type: python` like EAS classes.

Three shapes of user code that BML users already have, detected from what the entry
file defines (see `detect` in python.py):

- PredictWrapper: a class with `preprocess(request_body[, **preprocess_args]) -> (data,
  infer_args, request_context)`, `predict(data, infer_args)` and `postprocess(result,
  request_context[, **postprocess_args])`, built as `PredictWrapper(model_path, use_gpu,
  logger)` or the older `PredictWrapper(model_path)`. The args come from
  `{model_path}/preprocess_args.json` and `postprocess_args.json` (empty when absent).
  A wrapper without `predict` (BML's Paddle, PaddleClas, PaddleDetection scripts) has
  the platform run the Paddle inference model found in the model folder: `data` is
  `{input name: array}` and `postprocess` gets the list of output arrays.
  A body `{"instances": [...]}` of objects is BML's framework API: each instance is
  preprocessed alone, the model runs once on them all (arrays stacked, dicts of arrays
  joined on axis 0), and each instance's slice of the result is postprocessed alone;
  the answer is `{"result": {"labels"|"predictions": [one per instance]}}`;
- PyModel: a class built as `PyModel(model_path)` with `predict(request_body)`;
- PyTorch module functions: `model_fn(model_dir) -> model`, optional
  `input_fn(request) -> data`, optional `predict_fn(data, model)` (else `model(data)`,
  under `torch.no_grad()` for torch modules), optional `output_fn(result) -> body`.

With the service in BML mode (the service JSON's `bml` block; eas/protocols/bml.py adds
BML's envelope at the gateway), answers follow BML's rule: a dict as it is, a list as
`{"results": list}`, anything else as `{"result": value}` (model_fn services always as
`{"result": output}`, a JSON string output_fn returns parsed first).

`request_body` / `request` is the parsed JSON when the body is JSON (BML hands a
dict), else the raw bytes. Whatever comes back is sent as JSON when it is a
dict/list/number (numpy arrays and tensors included), as text when a str, as is when
bytes; `(body, status)` sets the HTTP status. A generator (or async generator) coming
back streams the answer: each item goes to the client as it is yielded, str and bytes
as they are, anything else as one line of JSON (NDJSON).

Errors: raise `CustomException(error_code, message)` (import it from here, or define
your own class of that name with `error_code` and `message`) and the client gets a
400 whose body's `code` is your error_code and `message` your message. Any other
exception is a 400 `processor raised <Type>: <message>`.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ._jsonio import guess_content_type, is_json_request, to_jsonable
from ._usercode import is_stream, load_failure, streamed
from .base import ModelContext, ProcessorError, Request, Response, decode_error


class CustomException(Exception):
    """A BML user error: the client receives `{"code": error_code, "message": message, ...}`."""

    def __init__(self, error_code: Any, message: str = "") -> None:
        super().__init__(error_code, message)
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.error_code}] {self.message}"


def _custom_error(exc: BaseException) -> ProcessorError | None:
    """Any exception class named CustomException (ours or the user's own) with an error code."""
    if not any(cls.__name__ == "CustomException" for cls in type(exc).__mro__):
        return None
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None) or getattr(exc, "error_msg", None)
    if code is None and len(exc.args) >= 2:  # CustomException(error_code, message) without attributes
        code = exc.args[0]
    if message is None:
        message = str(exc.args[1]) if len(exc.args) >= 2 else str(exc)
    return ProcessorError(str(message), status=400, code=to_jsonable(code))


def call_user(what: str, func: Callable[..., Any], *args: Any) -> Any:
    """Run user code for one request; its errors become the request's 400, never a crash."""
    try:
        return func(*args)
    except ProcessorError:
        raise
    except Exception as exc:
        raise _user_error(exc, what) from None


def _user_error(exc: Exception, what: str) -> ProcessorError:
    """What user code raised, as the request's error: a CustomException's own code and
    message, else a 400 naming the exception and where."""
    custom = _custom_error(exc)
    if custom is not None:
        return custom
    return ProcessorError(f"processor raised {type(exc).__name__}: {exc} (in {what})")


def _piece(item: Any) -> tuple[bytes, str]:
    """One item a streaming BML function yields: str and bytes as they are, anything else
    as a line of JSON."""
    if isinstance(item, str):
        return item.encode("utf-8"), "text"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item), "bytes"
    try:
        return json.dumps(_plain(item), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n", "json"
    except (TypeError, ValueError) as exc:
        raise ProcessorError(f"yielded {type(item).__name__}, which cannot be sent as JSON: {exc}",
                             status=500) from None


def request_value(request: Request) -> Any:
    """The request as BML user code receives it: parsed JSON, else the raw bytes."""
    if is_json_request(request):
        try:
            return json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProcessorError(f"request body is not valid JSON: {exc}") from None
        except Exception as exc:  # RecursionError for nesting past Python's limit, MemoryError
            raise decode_error(exc) from None
    return request.body


def _plain(value: Any) -> Any:
    """Tensors and other array-likes (`.tolist()`) to JSON-able values, recursively."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensors, without importing torch
        value = value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    value = to_jsonable(value)
    if not isinstance(value, (dict, list, str, int, float, bool, type(None))) and hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    return value


def encode_result(result: Any, what: str) -> Response:
    """A user function's return value as the HTTP answer (see the module doc)."""
    status = 200
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int) \
            and not isinstance(result[1], bool) and 100 <= result[1] <= 599:
        result, status = result
    if is_stream(result):
        return streamed(result, status, _piece, lambda exc: _user_error(exc, what))
    if isinstance(result, (bytes, bytearray, memoryview)):
        body = bytes(result)
        return Response(body, status, guess_content_type(body))
    if isinstance(result, str):
        body = result.encode("utf-8")
        return Response(body, status, guess_content_type(body))
    try:
        body = json.dumps(_plain(result), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProcessorError(f"{what} returned {type(result).__name__}, which cannot be sent as JSON: {exc}",
                             status=500) from None
    return Response(body, status, "application/json")


#: What BML's platform passes a constructor, by parameter name; unnamed positional
#: parameters get them in BML's order (model_path, use_gpu, logger).
_CONSTRUCTOR_ORDER = ("model_path", "use_gpu", "logger")


def _construct(cls: type, ctx: ModelContext, code_root: Path) -> Any:
    """`cls(model_path, use_gpu, logger)` or `cls(model_path)`, as the constructor asks;
    model_entry/model_config keywords too when it takes them."""
    supply: dict[str, Any] = {"model_path": ctx.model_dir, "use_gpu": ctx.device == "cuda",
                              "logger": logging.getLogger(f"bml.{cls.__name__}"),
                              "model_entry": ctx.model_entry, "model_config": ctx.model_config}
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # past self
    except (TypeError, ValueError):
        params = []
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            name = p.name if p.name in supply else (_CONSTRUCTOR_ORDER[len(args)]
                                                    if len(args) < len(_CONSTRUCTOR_ORDER) else None)
            args.append(supply.get(name) if name else None)
        elif p.name in supply:
            kwargs[p.name] = supply[p.name]
    try:
        return cls(*args, **kwargs)
    except Exception as exc:
        shown = ", ".join(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        raise load_failure(f"{cls.__name__}({shown}) failed", exc, code_root) from None


def bml_options(ctx: ModelContext) -> dict[str, Any] | None:
    """The service JSON's `bml` block when the service is in BML mode, else None."""
    block = (ctx.options or {}).get("bml")
    if not isinstance(block, dict) or block.get("enabled") is False:
        return None
    return block


def bml_rule(result: Any) -> Any:
    """BML's answer rule for what user code returns: dict as is, list as
    `{"results": ...}`, anything else as `{"result": ...}`."""
    result = _plain(result)
    if isinstance(result, dict):
        return result
    if isinstance(result, list):
        return {"results": result}
    return {"result": result}


def _args_file(model_dir: str | None, name: str) -> dict[str, Any]:
    """`{model_path}/preprocess_args.json` (or postprocess_args.json): {} when absent."""
    if not model_dir or not Path(model_dir).is_dir():
        return {}
    path = Path(model_dir) / name
    if not path.is_file():
        return {}
    from .base import ModelLoadError

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{name} in the model folder is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{name} in the model folder must hold a JSON object, not {type(value).__name__}")
    return value


def _takes_extra(func: Any) -> bool:
    """Whether a preprocess/postprocess takes the args dict (`**kwargs`)."""
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False


#: Which key of `result` holds one answer per instance, by the `bml.framework` a service
#: names (BML's per-framework API documents): tree and linear models answer labels.
_INSTANCES_KEY = {"sklearn": "labels", "xgboost": "labels", "tensorflow": "predictions",
                  "pytorch": "predictions", "paddle": "predictions", "paddleclas": "predictions",
                  "paddledetection": "predictions"}


def _join(items: list[Any]) -> tuple[Any, bool]:
    """Instances' preprocessed data as one batch: arrays stacked on a new axis 0, dicts of
    arrays joined on axis 0. (batch, True), or (None, False) when they cannot be joined."""
    import numpy as np

    try:
        if all(isinstance(d, dict) for d in items):
            keys = list(items[0])
            if any(list(d) != keys for d in items):
                return None, False
            return {k: np.concatenate([np.asarray(d[k]) for d in items], axis=0) for k in keys}, True
        arrays = [np.asarray(d) for d in items]
        if any(a.dtype == object for a in arrays):
            return None, False
        return np.stack(arrays, axis=0), True
    except (ValueError, TypeError):
        return None, False


def _split(result: Any, counts: list[int]) -> list[Any] | None:
    """One batched result back into per-instance slices (each keeps its batch axis), or
    None when it does not have one row per instance."""
    import numpy as np

    total = sum(counts)
    starts = [sum(counts[:i]) for i in range(len(counts))]

    def cut(value: Any) -> list[Any] | None:
        if isinstance(value, dict):
            parts = {k: cut(v) for k, v in value.items()}
            if any(p is None for p in parts.values()):
                return None
            return [{k: parts[k][i] for k in parts} for i in range(len(counts))]  # type: ignore[index]
        if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") for v in value):
            outs = [cut(v) for v in value]
            if any(o is None for o in outs):
                return None
            return [[o[i] for o in outs] for i in range(len(counts))]  # type: ignore[index]
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != total:
            return None
        return [array[s:s + n] for s, n in zip(starts, counts)]

    return cut(result)


def _rows(data: Any) -> int:
    """How many rows one instance's preprocessed data holds (dict: its first array's)."""
    import numpy as np

    if isinstance(data, dict):
        first = next(iter(data.values()), None)
        return int(np.asarray(first).shape[0]) if first is not None and np.asarray(first).ndim else 1
    return 1


class PredictWrapperRunner:
    """preprocess -> predict (the user's, or the platform's Paddle model) -> postprocess."""

    style = "BML PredictWrapper"

    def __init__(self, cls: type, ctx: ModelContext, code_root: Path) -> None:
        from .base import ModelLoadError

        missing = [m for m in ("preprocess", "postprocess") if not callable(getattr(cls, m, None))]
        if missing:
            raise ModelLoadError(f"{cls.__name__} looks like a BML PredictWrapper but lacks "
                                 f"{', '.join(m + '()' for m in missing)}")
        self.name = cls.__name__
        self.bml = bml_options(ctx)
        framework = str((self.bml or {}).get("framework") or "").lower()
        self.platform_model: Any = None
        if not callable(getattr(cls, "predict", None)):
            self.platform_model = _platform_model(cls.__name__, ctx)
            self.style = "BML PredictWrapper (platform-run Paddle model)"
            framework = framework or "paddle"
        self.instances_key = _INSTANCES_KEY.get(framework, "labels")
        self.pre_args = _args_file(ctx.model_dir, "preprocess_args.json")
        self.post_args = _args_file(ctx.model_dir, "postprocess_args.json")
        self.instance = _construct(cls, ctx, code_root)
        self._pre_extra = _takes_extra(self.instance.preprocess)
        self._post_extra = _takes_extra(self.instance.postprocess)

    def _pre(self, body: Any) -> tuple[Any, Any, Any]:
        inst = self.instance
        args = (body,)
        kwargs = self.pre_args if self._pre_extra else {}
        prepared = call_user(f"{self.name}.preprocess", lambda: inst.preprocess(*args, **kwargs))
        if not (isinstance(prepared, (tuple, list)) and len(prepared) == 3):
            raise ProcessorError(f"{self.name}.preprocess returned {type(prepared).__name__}; "
                                 "it must return (data, infer_args, request_context)", status=500)
        return prepared[0], prepared[1], prepared[2]

    def _predict(self, data: Any, infer_args: Any) -> Any:
        if self.platform_model is not None:
            if not isinstance(data, dict):
                raise ProcessorError(f"{self.name}.preprocess must return data as {{input name: array}} for the "
                                     f"Paddle model, not {type(data).__name__}", status=500)
            import numpy as np

            outputs = self.platform_model._run({k: np.asarray(v) for k, v in data.items()})
            return list(outputs.values())
        return call_user(f"{self.name}.predict", self.instance.predict, data, infer_args or {})

    def _post(self, result: Any, context: Any) -> Any:
        kwargs = self.post_args if self._post_extra else {}
        return call_user(f"{self.name}.postprocess", lambda: self.instance.postprocess(result, context, **kwargs))

    def handle(self, request: Request) -> Response:
        body = request_value(request)
        if _is_instances(body):
            return self._instances(body["instances"])
        data, infer_args, context = self._pre(body)
        out = self._post(self._predict(data, infer_args), context)
        if self.bml is not None:
            out = bml_rule(out)
        return encode_result(out, f"{self.name}.postprocess")

    def _instances(self, instances: list[Any]) -> Response:
        """BML's framework API: per-instance preprocess, one batched predict, per-instance
        postprocess; instances whose data cannot be joined run one by one."""
        prepared = [self._pre(item) for item in instances]
        batch, joined = _join([p[0] for p in prepared]) if prepared else (None, False)
        pieces: list[Any] | None = None
        if joined and all(not p[1] for p in prepared):
            counts = [_rows(p[0]) if isinstance(p[0], dict) else 1 for p in prepared]
            pieces = _split(self._predict(batch, {}), counts)
        if pieces is None:
            pieces = [self._predict(p[0], p[1]) for p in prepared]
        answers = [_plain(self._post(piece, p[2])) for piece, p in zip(pieces, prepared)]
        return encode_result({"result": {self.instances_key: answers}}, f"{self.name}.postprocess")


def _is_instances(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("instances"), list) and bool(body["instances"]) \
        and all(isinstance(i, dict) for i in body["instances"])


def _platform_model(name: str, ctx: ModelContext) -> Any:
    """The Paddle inference model a wrapper without predict() has the platform run."""
    from .base import ModelLoadError

    folder = Path(ctx.model_dir) if ctx.model_dir else None
    if folder is None or not folder.is_dir() or not any(folder.glob("*.pdiparams")):
        raise ModelLoadError(f"{name} has no predict(): the platform runs the model for it, but the model folder "
                             "holds no Paddle inference model (model.pdmodel or model.json + model.pdiparams); "
                             "add predict(data, infer_args) or the model files")
    from .paddle import PaddleProcessor

    model = PaddleProcessor(ctx)
    model.load()
    return model


class PyModelRunner:
    """`PyModel(model_path).predict(request_body)`."""

    style = "BML PyModel"

    def __init__(self, cls: type, ctx: ModelContext, code_root: Path) -> None:
        self.name = cls.__name__
        self.bml = bml_options(ctx)
        self.instance = _construct(cls, ctx, code_root)

    def handle(self, request: Request) -> Response:
        result = call_user(f"{self.name}.predict", self.instance.predict, request_value(request))
        if self.bml is not None and not is_stream(result):
            result = bml_rule(result)
        return encode_result(result, f"{self.name}.predict")


class ModuleFunctionsRunner:
    """BML PyTorch style: `model_fn` once; `input_fn` -> model -> `output_fn` per request."""

    style = "BML model_fn/input_fn/output_fn"

    def __init__(self, module: ModuleType, ctx: ModelContext, code_root: Path) -> None:
        self.input_fn = getattr(module, "input_fn", None)
        self.predict_fn = getattr(module, "predict_fn", None)
        self.output_fn = getattr(module, "output_fn", None)
        try:
            self.model = module.model_fn(ctx.model_dir)
        except Exception as exc:
            raise load_failure("model_fn(model_dir) failed", exc, code_root) from None
        if self.predict_fn is None and not callable(self.model):
            from .base import ModelLoadError

            raise ModelLoadError(f"model_fn returned a {type(self.model).__name__}, which is not callable; "
                                 "return the model, or define predict_fn(data, model)")
        self._no_grad = _torch_no_grad(self.model)
        self.bml = bml_options(ctx)

    def handle(self, request: Request) -> Response:
        value = request_value(request)
        data = call_user("input_fn", self.input_fn, value) if self.input_fn else value
        with self._no_grad():
            if self.predict_fn is not None:
                result = call_user("predict_fn", self.predict_fn, data, self.model)
            else:
                result = call_user("the model returned by model_fn", self.model, data)
        if self.output_fn is not None:
            result = call_user("output_fn", self.output_fn, result)
        if self.bml is not None and not is_stream(result):
            result = {"result": _parsed(_plain(result))}
        return encode_result(result, "output_fn" if self.output_fn else "the model")


def _parsed(value: Any) -> Any:
    """A JSON text (BML's PyTorch output_fn returns json.dumps(...)) as its value."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return value


def _torch_no_grad(model: Any) -> Callable[[], Any]:
    """torch.no_grad for torch modules (no autograd graph per request); a no-op otherwise.

    A module model_fn left in training mode (BML's own MNIST sample never calls
    eval()) is put in eval mode: serving never trains, and dropout would make every
    answer differ."""
    import contextlib
    import sys

    torch = sys.modules.get("torch")  # only if the user's code already imported it
    if torch is not None and isinstance(model, torch.nn.Module):
        if model.training:
            model.eval()
        return torch.no_grad
    return contextlib.nullcontext
