"""What every block of the service JSON shares: strict models, and the "kept" mark.

Blocks that act here refuse unknown keys by name (a typo such as `metdata` must not
deploy a service with default settings). EAS fields that have no meaning on a
self-hosted Ray cluster (cloud instance types, VPC ids, ...) are declared with `kept()`:
they validate, are stored and shown as sent, and `kept_fields` (eas/spec/kept.py) names
them so the user is told once that they do nothing here, instead of being refused or
silently dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

KEPT = "kept"


class Strict(BaseModel):
    """A block of the service JSON: EAS field names, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def kept(default: Any = None, **kwargs: Any) -> Any:
    """A field EAS defines that has no effect here: accepted, stored, shown, named in an event."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[KEPT] = True
    return Field(default, json_schema_extra=extra, **kwargs)


def is_kept(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(KEPT))
