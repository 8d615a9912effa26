"""The service description as a document: JSON or YAML text in, a validated ServiceSpec
out, errors that name the field; and the deep merge behind partial updates."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from pydantic import ValidationError

from eas.spec.service import ServiceSpec


class SpecError(ValueError):
    """The service description is invalid; `problems` holds (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" if field else reason for field, reason in problems))


def load_text(text: str, source: str = "service description") -> dict[str, Any]:
    """Parse JSON, or YAML when it is not JSON; errors say where the text is broken."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as json_exc:
        stripped = text.lstrip()
        if stripped.startswith(("{", "[")):
            raise SpecError([("", f"{source} is not valid JSON: {json_exc.msg} at line {json_exc.lineno} column {json_exc.colno}")]) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as yaml_exc:
            raise SpecError([("", f"{source} is neither valid JSON nor YAML: {yaml_exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([("", f"{source} must be a JSON object, got {type(data).__name__}")])
    return data


def parse(data: dict[str, Any] | str | bytes) -> ServiceSpec:
    """Validate a service description (a dict, or JSON/YAML text)."""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            raise SpecError([("", "service description is not UTF-8 text")]) from None
    if isinstance(data, str):
        data = load_text(data)
    if not isinstance(data, dict):
        raise SpecError([("", "service description must be a JSON object")])
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem(e) for e in exc.errors()]) from None


def _problem(err: Any) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return loc, "unknown field (check the spelling against the service JSON reference)"
    if kind == "missing":
        if loc == "name":
            return loc, "required field is missing (the top-level name, or metadata.name)"
        return loc, "required field is missing"
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    return loc, msg


def service_name(data: dict[str, Any]) -> Any:
    """The name a raw description gives: top-level `name`, else the new-style `metadata.name`."""
    meta = data.get("metadata")
    return data.get("name") if data.get("name") is not None or not isinstance(meta, dict) else meta.get("name")


def with_name(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of a raw description named `name`, in whichever places it names itself."""
    out = {**data, "name": name}
    if isinstance(data.get("metadata"), dict) and "name" in data["metadata"]:
        out["metadata"] = {**data["metadata"], "name": name}
    return out


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a partial service description into a full one (what `modify` sends)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
