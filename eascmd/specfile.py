"""Service description input: JSON/YAML files and `-Dkey.path=value` overrides.

Mistakes here are the most common operator error, so every failure names the file and,
for JSON and YAML, the line and column, and says how to fix it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml


class SpecError(click.ClickException):
    """A service file that cannot be used; shown as `[ERROR] <message>`, exit 1."""


def load_spec(path: str) -> dict[str, Any]:
    """Read a JSON or YAML object from `path` (YAML for .yaml/.yml, else JSON, else YAML)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"no such file: {path}: check the path of the service description") from None
    except IsADirectoryError:
        raise SpecError(f"{path} is a directory: give the service description file (.json or .yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise SpecError(f"{path} is empty: write the service description as a JSON object")

    if file.suffix.lower() in (".yaml", ".yml"):
        data = _parse_yaml(path, text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if file.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
                raise SpecError(
                    f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}: "
                    "fix the file and run the command again"
                ) from None
            data = _parse_yaml(path, text)
    if not isinstance(data, dict):
        raise SpecError(f'{path} must hold an object ({{"name": ..., ...}}), not a {type(data).__name__}')
    return data


def _parse_yaml(path: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path} is not valid YAML: {problem}{where}: fix the file and run the command again") from None


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, null, objects, lists), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_defines(defines: Iterable[str]) -> dict[str, Any]:
    """`["metadata.instance=2", "metadata.cpu=4"]` -> `{"metadata": {"instance": 2, "cpu": 4}}`."""
    result: dict[str, Any] = {}
    for item in defines:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise click.BadParameter(
                f"{item!r} is not key.path=value: write it like -Dmetadata.instance=2", param_hint="-D"
            )
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise click.BadParameter(f"{prefix} is set to a value and also used as an object", param_hint="-D")
            node = child
        value = parse_value(raw)
        if isinstance(node.get(parts[-1]), dict) and isinstance(value, dict):
            deep_merge(node[parts[-1]], value)
        elif isinstance(node.get(parts[-1]), dict):
            raise click.BadParameter(f"{key} is used as an object and also set to a value", param_hint="-D")
        else:
            node[parts[-1]] = value
    return result


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `extra` into `base` in place (objects merge, anything else replaces) and return it."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base
