"""Finding a model's main file and reading `model_config`, shared by built-in processors.

EAS unpacks `model_path` into a directory whose layout the user chose; these rules
(explicit `model_entry`, else the one file with the framework's suffix) keep simple
archives working without configuration while refusing to guess between two models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .base import ModelContext, ModelLoadError

_LISTED = 20


def _describe_dir(directory: Path) -> str:
    names = sorted(
        str(p.relative_to(directory)) + ("/" if p.is_dir() else "")
        for p in directory.rglob("*")
        if _visible(p, directory)
    )
    if not names:
        return "it is empty"
    more = f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return "it holds: " + ", ".join(names[:_LISTED]) + more


def _visible(path: Path, root: Path) -> bool:
    """Skip `.hidden` files and folders: macOS `._x` copies, `.ipynb_checkpoints`, ..."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _with_suffix(paths: Any, root: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in paths
                  if p.is_file() and p.suffix.lower() in suffixes and _visible(p, root))


def find_model_file(ctx: ModelContext, suffixes: Sequence[str], framework: str) -> Path:
    """The file to load: `model_dir` itself, `model_entry` inside it, or its only `suffixes` file.

    Files at the top level win; only when there are none is the tree searched, so an
    archive that wraps everything in one folder still works.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    wanted = ", ".join(f"*{s}" for s in suffixes)
    if not ctx.model_dir:
        raise ModelLoadError(f"no model_path given: the {framework} processor needs a {wanted} file")
    root = Path(ctx.model_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        raise ModelLoadError(f"model path {root} does not exist")

    if ctx.model_entry:
        entry = (root / ctx.model_entry.lstrip("/")).resolve()
        if not entry.is_relative_to(root.resolve()):
            raise ModelLoadError(f"model_entry {ctx.model_entry!r} points outside the model directory")
        if not entry.is_file():
            raise ModelLoadError(
                f"model_entry {ctx.model_entry!r} not found in {root} ({_describe_dir(root)})")
        return entry

    found = (_with_suffix(root.iterdir(), root, suffixes)
             or _with_suffix(root.rglob("*"), root, suffixes))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"no {wanted} file in {root} ({_describe_dir(root)})")
    names = ", ".join(str(p.relative_to(root)) for p in found)
    raise ModelLoadError(f"several {framework} model files in {root}: {names}; "
                         "set model_entry to the one to serve")


def model_config_dict(value: Any) -> dict[str, Any]:
    """`model_config` as a dict: the service JSON may carry an object or a JSON string."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (str, bytes)):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ModelLoadError(f"model_config is not valid JSON: {exc}") from None
        if isinstance(parsed, dict):
            return parsed
    raise ModelLoadError(f"model_config must be a JSON object, got {type(value).__name__}: {value!r:.80}")


def find_model_dir(ctx: ModelContext, marker: str, framework: str) -> Path:
    """The directory holding `marker` (e.g. `saved_model.pb`): model_dir, model_entry, or below.

    TF-Serving layouts (`<model>/<version>/saved_model.pb`) serve the highest numeric
    version, as TF Serving does; any other choice between two models is refused.
    """
    if not ctx.model_dir:
        raise ModelLoadError(f"no model_path given: the {framework} processor needs a directory with {marker}")
    root = Path(ctx.model_dir)
    if not root.is_dir():
        what = "is a file" if root.is_file() else "does not exist"
        raise ModelLoadError(f"model path {root} {what}: the {framework} processor needs a directory "
                             f"with {marker} (an archive of it works too)")
    if ctx.model_entry:
        entry = (root / ctx.model_entry.lstrip("/")).resolve()
        if not entry.is_relative_to(root.resolve()):
            raise ModelLoadError(f"model_entry {ctx.model_entry!r} points outside the model directory")
        if entry.is_file() and entry.name == marker:
            entry = entry.parent
        if not (entry / marker).is_file():
            raise ModelLoadError(f"model_entry {ctx.model_entry!r} has no {marker} ({_describe_dir(root)})")
        return entry
    if (root / marker).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(marker) if _visible(p, root))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"no {marker} in {root}: not a {framework} model ({_describe_dir(root)})")
    versions = [p for p in found if p.name.isdigit() and p.parent == found[0].parent]
    if len(versions) == len(found):
        return max(versions, key=lambda p: int(p.name))
    names = ", ".join(str(p.relative_to(root)) for p in found)
    raise ModelLoadError(f"several {framework} models in {root}: {names}; set model_entry to the one to serve")
