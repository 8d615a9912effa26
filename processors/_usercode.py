"""Helpers shared by the user-code styles (EAS classes and the BML styles in bml.py).

Failures in user code must point at the user's file and line, and optional
constructor/method parameters must be detected the same way for every style.
"""

from __future__ import annotations

import inspect
import os
import traceback
from pathlib import Path
from typing import Any

from .base import ModelLoadError


def user_location(exc: BaseException, user_dir: Path) -> str:
    """` (at file:line)` of the deepest frame in user code: where the user should look."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    prefix = str(user_dir.resolve()) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename).startswith(prefix)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_failure(what: str, exc: BaseException, user_dir: Path) -> ModelLoadError:
    return ModelLoadError(f"{what}: {type(exc).__name__}: {exc}{user_location(exc, user_dir)}")


def accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def positional_count(func: Any) -> tuple[int, int]:
    """(required, total) positional parameters of a bound method."""
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return 0, 0
    return sum(p.default is p.empty for p in params), len(params)
