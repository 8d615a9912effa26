"""User code, EAS style (`processor_type: python`): a class with initialize() and process().

The user's file is loaded by path under a unique module name, so two services (or two
versions of one) never share module state through `sys.modules`.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from ._jsonio import guess_content_type
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


def _user_location(exc: BaseException, user_dir: Path) -> str:
    """` (at file:line)` of the deepest frame in user code: where the user should look."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    prefix = str(user_dir.resolve()) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename).startswith(prefix)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _load_failure(what: str, exc: BaseException, user_dir: Path) -> ModelLoadError:
    return ModelLoadError(f"{what}: {type(exc).__name__}: {exc}{_user_location(exc, user_dir)}")


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
        raise _load_failure(f"importing {path.name} failed", exc, code_root) from None
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


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def _positional_count(func: Any) -> tuple[int, int]:
    """(required, total) positional parameters of a bound method."""
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return 0, 0
    return sum(p.default is p.empty for p in params), len(params)


def _io_threads(ctx: ModelContext) -> int:
    rpc = (ctx.options.get("metadata") or {}).get("rpc") or {}
    try:
        return int(rpc.get("io_threads") or DEFAULT_IO_THREADS)
    except (TypeError, ValueError):
        return DEFAULT_IO_THREADS


class PythonProcessor(Processor):
    """Runs the user's `process(data: bytes) -> (bytes|str, status)` for each request."""

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        self.instance: Any = None
        self.entry_file: Path | None = None

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
        cls = pick_class(module, self.ctx.processor_mainclass, entry.name)

        kwargs: dict[str, Any] = {}
        if _accepts(cls, "worker_threads"):
            kwargs["worker_threads"] = self.ctx.workers
        if _accepts(cls, "io_threads"):
            kwargs["io_threads"] = _io_threads(self.ctx)
        try:
            instance = cls(**kwargs)
        except Exception as exc:
            raise _load_failure(f"{cls.__name__}() failed", exc, code_root) from None

        model_entry = self._model_entry_path()
        for attr, value in (("model_path", self.ctx.model_dir), ("model_entry", model_entry),
                            ("model_config", self.ctx.model_config)):
            try:
                setattr(instance, attr, value)
            except AttributeError:  # a read-only property the user defined; theirs wins
                pass

        required, total = _positional_count(instance.initialize)
        if total >= 2:  # C++ style initialize(model_entry, model_config)
            args: tuple[Any, ...] = (model_entry, self._model_config_text())
        elif required == 1:
            args = (self.ctx.model_dir,)
        else:
            args = ()
        try:
            instance.initialize(*args)
        except (Exception, SystemExit) as exc:
            raise _load_failure(f"{cls.__name__}.initialize() failed", exc, code_root) from None
        self.instance, self.entry_file = instance, entry

    def predict(self, request: Request) -> Response:
        try:
            result = self.instance.process(request.body)
        except Exception as exc:
            raise ProcessorError(f"processor raised {type(exc).__name__}: {exc}") from None
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
