"""Which fields of a service JSON are kept without effect here: named once to the user.

A field declared with `kept()` (eas/spec/base.py) is reported when its value differs
from its default, so `"enable_webservice": false` (EAS's default) is not news, while
`"cloud": {"computing": {"instance_type": "ecs.gn6i"}}` is reported as
`cloud.computing.instance_type`: the leaves the user actually set, in the JSON's own
spelling. Free-form blocks (`features`, `queue`) are reported as the block.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from eas.spec.base import is_kept


def kept_fields(model: BaseModel, prefix: str = "", *, every: bool = False) -> list[str]:
    """Dotted paths of the kept fields set in `model` to other than their default (sorted,
    each once). With `every`, each kept field itself, whatever its value (what a digest of
    what runs leaves out)."""
    found: list[str] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        path = prefix + (info.alias or name)
        if is_kept(info):
            if every:
                found.append(path)
            elif value != info.get_default(call_default_factory=True):
                found.extend(_leaves(value, path))
        elif isinstance(value, BaseModel):
            found.extend(kept_fields(value, path + ".", every=every))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found.extend(kept_fields(item, f"{path}[{i}].", every=every))
    return sorted(dict.fromkeys(found))


def _leaves(value: Any, path: str) -> list[str]:
    """A kept block as the paths of what is set inside it (a plain value: the path itself)."""
    if not isinstance(value, BaseModel):
        return [path]
    leaves: list[str] = []
    for name, info in type(value).model_fields.items():
        inner = getattr(value, name)
        if inner is None or inner == info.get_default(call_default_factory=True):
            continue
        leaves.extend(_leaves(inner, f"{path}.{info.alias or name}"))
    return leaves or [path]


def kept_message(paths: list[str]) -> str:
    """The event text: one line naming every kept field."""
    return "kept, no effect here: " + ", ".join(paths)
