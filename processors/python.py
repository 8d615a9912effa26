"""User code, EAS style (`processor_type: python`): a class with initialize() and process().

The user's file is loaded by path under a unique module name, so two services (or two
versions of one) never share module state through `sys.modules`. A class that also
defines `process_batch(data_list)` opts in to server-side batching (`rpc.batching`):
it gets the bodies of concurrent requests at once and answers one result per body.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from . import bml
from ._jsonio import guess_content_type
from ._usercode import StreamedResponse, accepts, is_stream, load_failure, positional_count, streamed
from .base import ModelContext, ModelLoadError, Processor, ProcessorError, Request, Response

DEFAULT_ENTRY = "app.py"
DEFAULT_IO_THREADS = 4
_module_ids = itertools.count(1)


def _install_allspark_shim() -> None:
    """Make `import allspark` work when the real EAS package is absent."""
    if "allspark" in sys.modules:
        return
    try:
        if importlib.util.find_spec("allspark") is not None:
            return
    except (ImportError, ValueError):
        pass
    from . import allspark_shim

    sys.modules["allspark"] = allspark_shim


def find_entry(processor_path: str | None, processor_entry: str | None) -> Path:
    """The user's main .py file: explicit entry, else the path itself, app.py, or the only .py."""
    if not processor_path:
        raise ModelLoadError("processor_type python needs processor_path (the user code)")
    root = Path(processor_path)
    if root.is_file():
        if root.suffix != ".py":
            raise ModelLoadError(f"processor_path {root} is not a .py file or a folder")
        return root
    if not root.is_dir():
        raise ModelLoadError(f"processor_path {root} does not exist")
    if processor_entry:
        entry = (root / processor_entry.lstrip("/")).resolve()
        if not entry.is_relative_to(root.resolve()):
            raise ModelLoadError(f"processor_entry {processor_entry!r} points outside processor_path")
        if not entry.is_file():
            raise ModelLoadError(f"processor_entry {processor_entry!r} not found in {root}")
        return entry
    if (root / DEFAULT_ENTRY).is_file():
        return root / DEFAULT_ENTRY
    scripts = sorted(p.name for p in root.glob("*.py"))
    if len(scripts) == 1:
        return root / scripts[0]
    found = ", ".join(scripts) if scripts else "no .py files"
    raise ModelLoadError(
        f"cannot tell which file is the processor in {root} ({found}); set processor_entry")


def _import_file(path: Path, code_root: Path) -> ModuleType:
    """Import `path` as a fresh module; its folder and `code_root` go on sys.path."""
    for folder in dict.fromkeys((str(code_root.resolve()), str(path.parent.resolve()))):
        if folder not in sys.path:
            sys.path.insert(0, folder)  # the entry's own folder ends up first
    _install_allspark_shim()
    name = f"eas_user_{next(_module_ids)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickle and typing look the module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # sys.exit() at import is a load failure too
        sys.modules.pop(name, None)
        raise load_failure(f"importing {path.name} failed", exc, code_root) from None
    return module


def _is_processor_class(obj: Any) -> bool:
    return inspect.isclass(obj) and callable(getattr(obj, "initialize", None)) \
        and callable(getattr(obj, "process", None))


def pick_class(module: ModuleType, mainclass: str | None, filename: str) -> type:
    """`processor_mainclass`, else the one class of the module with initialize and process."""
    defined = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and obj.__module__ == module.__name__]
    if mainclass:
        cls = getattr(module, mainclass, None)
        if not inspect.isclass(cls):
            names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
            raise ModelLoadError(
                f"processor_mainclass {mainclass!r} is not a class in {filename} (classes: {names})")
        if not _is_processor_class(cls):
            raise ModelLoadError(f"{mainclass} in {filename} lacks initialize() or process()")
        return cls
    candidates = [c for c in defined if _is_processor_class(c)]
    # A base class and its subclass both qualify; the subclass is the one meant to run.
    leaves = [c for c in candidates if not any(o is not c and issubclass(o, c) for o in candidates)]
    if len(leaves) == 1:
        return leaves[0]
    if not leaves:
        raise ModelLoadError(
            f"no class with initialize() and process() in {filename}; "
            f"classes found: {', '.join(c.__name__ for c in defined) or 'none'}")
    raise ModelLoadError(
        f"several processor classes in {filename}: {', '.join(c.__name__ for c in leaves)}; "
        "set processor_mainclass")


def _has(cls: Any, *methods: str) -> bool:
    return inspect.isclass(cls) and all(callable(getattr(cls, m, None)) for m in methods)


def _leaves(classes: list[type]) -> list[type]:
    """A base class and its subclass both qualify; the subclass is the one meant to run."""
    return [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]


def _one(classes: list[type], preferred: str) -> type | None:
    leaves = _leaves(classes)
    named = [c for c in leaves if c.__name__ == preferred]
    if len(named) == 1:
        return named[0]
    return leaves[0] if len(leaves) == 1 else None


def detect_style(module: ModuleType, mainclass: str | None, filename: str) -> tuple[str, Any]:
    """Which user-code style the entry file is written in, and the class (or module) to run.

    In order: an EAS class (initialize + process); a BML PredictWrapper (preprocess +
    postprocess, preferring one named PredictWrapper); BML module functions
    (model_fn); a BML PyModel (predict, preferring one named PyModel).
    `processor_mainclass` forces the class; its methods then choose the style.
    """
    defined = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and obj.__module__ == module.__name__]
    if mainclass:
        cls = getattr(module, mainclass, None)
        if inspect.isclass(cls) and not _is_processor_class(cls):
            if _has(cls, "preprocess", "postprocess"):
                return "wrapper", cls
            if _has(cls, "predict"):
                return "pymodel", cls
        return "eas", pick_class(module, mainclass, filename)
    if any(_is_processor_class(c) for c in defined):
        return "eas", pick_class(module, None, filename)
    wrapper = _one([c for c in defined if _has(c, "preprocess", "postprocess")], "PredictWrapper")
    if wrapper is not None:
        return "wrapper", wrapper
    if callable(getattr(module, "model_fn", None)):
        return "functions", module
    pymodel = _one([c for c in defined if _has(c, "predict") and not issubclass(c, BaseException)], "PyModel")
    if pymodel is not None:
        return "pymodel", pymodel
    raise ModelLoadError(
        f"no class with initialize() and process() in {filename}; "
        f"classes found: {', '.join(c.__name__ for c in defined) or 'none'}. Also served: a BML "
        "PredictWrapper class (preprocess/predict/postprocess), a PyModel class (predict), or "
        "module functions model_fn/input_fn/output_fn")


def _io_threads(ctx: ModelContext) -> int:
    rpc = (ctx.options.get("metadata") or {}).get("rpc") or {}
    try:
        return int(rpc.get("io_threads") or DEFAULT_IO_THREADS)
    except (TypeError, ValueError):
        return DEFAULT_IO_THREADS


class PythonProcessor(Processor):
    """User code: EAS `process(data: bytes) -> (bytes|str, status)`, or a BML style (bml.py)."""

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.instance: Any = None
        self.entry_file: Path | None = None
        self.runner: Any = None
        """The BML style's runner (bml.py); None for EAS classes."""
        self.style = "EAS"
        self.supports_batching = False
        """True once loaded when the class defines `process_batch` (it opts in to batching)."""

    def _model_entry_path(self) -> str | None:
        """model_entry as a local path: relative to model_dir, which is not the cwd."""
        model_dir, entry = self.ctx.model_dir, self.ctx.model_entry
        if entry and model_dir and Path(model_dir).is_dir():
            return str(Path(model_dir) / entry.lstrip("/"))
        if model_dir and Path(model_dir).is_file():
            return model_dir
        return entry

    def _model_config_text(self) -> str:
        config = self.ctx.model_config
        if config is None:
            return ""
        return config if isinstance(config, str) else json.dumps(config)

    def load(self) -> None:
        entry = find_entry(self.ctx.processor_path, self.ctx.processor_entry)
        code_root = entry.parent if Path(str(self.ctx.processor_path)).is_file() \
            else Path(str(self.ctx.processor_path))
        module = _import_file(entry, code_root)
        style, target = detect_style(module, self.ctx.processor_mainclass, entry.name)
        if style != "eas":
            runner_cls = {"wrapper": bml.PredictWrapperRunner, "pymodel": bml.PyModelRunner,
                          "functions": bml.ModuleFunctionsRunner}[style]
            self.runner = runner_cls(target, self.ctx, code_root)
            self.instance = getattr(self.runner, "instance", None)
            self.style, self.entry_file = self.runner.style, entry
            return
        cls = target

        kwargs: dict[str, Any] = {}
        if accepts(cls, "worker_threads"):
            kwargs["worker_threads"] = self.ctx.workers
        if accepts(cls, "io_threads"):
            kwargs["io_threads"] = _io_threads(self.ctx)
        try:
            instance = cls(**kwargs)
        except Exception as exc:
            raise load_failure(f"{cls.__name__}() failed", exc, code_root) from None

        model_entry = self._model_entry_path()
        for attr, value in (("model_path", self.ctx.model_dir), ("model_entry", model_entry),
                            ("model_config", self.ctx.model_config), ("mounts", dict(self.ctx.mounts))):
            try:
                setattr(instance, attr, value)
            except AttributeError:  # a read-only property the user defined; theirs wins
                pass

        required, total = positional_count(instance.initialize)
        if total >= 2:  # C++ style initialize(model_entry, model_config)
            args: tuple[Any, ...] = (model_entry, self._model_config_text())
        elif required == 1:
            args = (self.ctx.model_dir,)
        else:
            args = ()
        try:
            instance.initialize(*args)
        except (Exception, SystemExit) as exc:
            raise load_failure(f"{cls.__name__}.initialize() failed", exc, code_root) from None
        self.instance, self.entry_file = instance, entry
        self.supports_batching = callable(getattr(instance, "process_batch", None))

    def predict_batch(self, requests: Sequence[Request]) -> list[Response]:
        """`process_batch([body, ...])` -> one result per body, each as `process` returns it.

        Should it raise or answer the wrong count, the batcher (eas/instance/batching.py)
        calls it again one request at a time, so only the request at fault fails.
        """
        if not self.supports_batching:
            return super().predict_batch(requests)
        results = self.instance.process_batch([r.body for r in requests])
        if not isinstance(results, (list, tuple)) or len(results) != len(requests):
            count = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
            raise ProcessorError(f"process_batch() answered {count} results for {len(requests)} requests",
                                 status=500)
        out = []
        for result in results:
            body, status = self._unpack(result)
            out.append(Response(body, status, guess_content_type(body)))
        return out

    def predict(self, request: Request) -> Response:
        if self.runner is not None:
            return self.runner.handle(request)
        try:
            result = self.instance.process(request.body)
        except Exception as exc:
            raise ProcessorError(f"processor raised {type(exc).__name__}: {exc}") from None
        stream = _stream_of(result)
        if stream is not None:
            return stream
        body, status = self._unpack(result)
        return Response(body, status, guess_content_type(body))

    @staticmethod
    def _unpack(result: Any) -> tuple[bytes, int]:
        """Accept `(bytes|str, int)` or bare bytes/str; anything else is a processor bug (500)."""
        status: Any = 200
        body = result
        if isinstance(result, (tuple, list)) and len(result) == 2:
            body, status = result
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        if not isinstance(body, bytes):
            raise ProcessorError(
                f"process() returned {type(result).__name__}"
                + (f" ({type(body).__name__}, {type(status).__name__})" if body is not result else "")
                + "; expected bytes, str, or (bytes, status)", status=500)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ProcessorError(
                f"process() returned status {status!r}; expected an HTTP status code (int)", status=500)
        return body, status


# -- streaming: `process` returns a generator -------------------------------------------------


def _stream_of(result: Any) -> StreamedResponse | None:
    """`process()`'s answer when it streams: a generator or async generator (or one with a
    status, `(generator, 200)`), each yielded piece sent to the client as it comes."""
    status: Any = 200
    if isinstance(result, (tuple, list)) and len(result) == 2 and is_stream(result[0]):
        result, status = result
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ProcessorError(f"process() returned status {status!r}; expected an HTTP status code (int)",
                                 status=500)
    if not is_stream(result):
        return None
    return streamed(result, status, _eas_piece, _eas_error)


def _eas_piece(item: Any) -> tuple[bytes, str]:
    """A piece an EAS `process()` generator yields: bytes as they are, str as UTF-8."""
    if isinstance(item, str):
        return item.encode("utf-8"), "text"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item), "bytes"
    raise ProcessorError(f"process() yielded {type(item).__name__}; yield bytes or str", status=500)


def _eas_error(exc: Exception) -> ProcessorError:
    return ProcessorError(f"processor raised {type(exc).__name__}: {exc}")
