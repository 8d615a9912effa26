"""Baidu BML user-code styles, served with `processor_type: python` like EAS classes.

Three shapes of user code that BML users already have, detected from what the entry
file defines (see `detect` in python.py):

- PredictWrapper: a class with `preprocess(request_body, **args) -> (data, infer_args,
  request_context)`, `predict(data, infer_args)` and `postprocess(result,
  request_context, **args)`, built as `PredictWrapper(model_path)`;
- PyModel: a class built as `PyModel(model_path)` with `predict(request_body)`;
- PyTorch module functions: `model_fn(model_dir) -> model`, optional
  `input_fn(request) -> data`, optional `predict_fn(data, model)` (else `model(data)`,
  under `torch.no_grad()` for torch modules), optional `output_fn(result) -> body`.

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

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ._jsonio import guess_content_type, is_json_request, to_jsonable
from ._usercode import accepts, is_stream, load_failure, positional_count, streamed
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
    if code is None and len(exc.args) >= 1:
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


def _construct(cls: type, ctx: ModelContext, code_root: Path) -> Any:
    """`cls(model_path)`, plus model_entry/model_config keywords when the constructor takes them."""
    kwargs = {k: v for k, v in (("model_entry", ctx.model_entry), ("model_config", ctx.model_config))
              if accepts(cls, k)}
    required, _ = positional_count(cls.__init__)
    try:
        if required >= 2 or accepts(cls, "model_path"):  # self + model_path
            return cls(ctx.model_dir, **kwargs)
        return cls(**kwargs)
    except Exception as exc:
        raise load_failure(f"{cls.__name__}(model_path) failed", exc, code_root) from None


class PredictWrapperRunner:
    """preprocess -> predict -> postprocess, once per request."""

    style = "BML PredictWrapper"

    def __init__(self, cls: type, ctx: ModelContext, code_root: Path) -> None:
        missing = [m for m in ("preprocess", "predict", "postprocess") if not callable(getattr(cls, m, None))]
        if missing:
            from .base import ModelLoadError

            raise ModelLoadError(f"{cls.__name__} looks like a BML PredictWrapper but lacks "
                                 f"{', '.join(m + '()' for m in missing)}")
        self.name = cls.__name__
        self.instance = _construct(cls, ctx, code_root)

    def handle(self, request: Request) -> Response:
        inst = self.instance
        prepared = call_user(f"{self.name}.preprocess", inst.preprocess, request_value(request))
        if not (isinstance(prepared, (tuple, list)) and len(prepared) == 3):
            raise ProcessorError(f"{self.name}.preprocess returned {type(prepared).__name__}; "
                                 "it must return (data, infer_args, request_context)", status=500)
        data, infer_args, context = prepared
        result = call_user(f"{self.name}.predict", inst.predict, data, infer_args)
        body = call_user(f"{self.name}.postprocess", inst.postprocess, result, context)
        return encode_result(body, f"{self.name}.postprocess")


class PyModelRunner:
    """`PyModel(model_path).predict(request_body)`."""

    style = "BML PyModel"

    def __init__(self, cls: type, ctx: ModelContext, code_root: Path) -> None:
        self.name = cls.__name__
        self.instance = _construct(cls, ctx, code_root)

    def handle(self, request: Request) -> Response:
        result = call_user(f"{self.name}.predict", self.instance.predict, request_value(request))
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

    def handle(self, request: Request) -> Response:
        value = request_value(request)
        data = call_user("input_fn", self.input_fn, value) if self.input_fn else value
        with self._no_grad():
            if self.predict_fn is not None:
                result = call_user("predict_fn", self.predict_fn, data, self.model)
            else:
                result = call_user("the model returned by model_fn", self.model, data)
        if self.output_fn is None:
            return encode_result(result, "the model")
        return encode_result(call_user("output_fn", self.output_fn, result), "output_fn")


def _torch_no_grad(model: Any) -> Callable[[], Any]:
    """torch.no_grad for torch modules (no autograd graph per request); a no-op otherwise."""
    import contextlib
    import sys

    torch = sys.modules.get("torch")  # only if the user's code already imported it
    if torch is not None and isinstance(model, torch.nn.Module):
        return torch.no_grad
    return contextlib.nullcontext
