"""Plain ASCII box tables, as EAS's eascmd prints them.

One renderer for every command so all output lines up the same way; cells may hold
several lines (desc's ServiceConfig), and wide (CJK) characters count as two columns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

#: Terminal escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, two-byte `ESC x`).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]")
#: Characters that steer a terminal or reorder text: C0/C1 controls but tab and newline,
#: DEL, and the Unicode bidirectional overrides and isolates.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """Text from the server made safe to print: no escape sequences or control characters
    (a service name, message or event cannot recolour, move or clear the operator's
    terminal, rewrite earlier lines with \\r, or reorder what it shows)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def display_width(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and fullwidth characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def cell_text(value: Any) -> str:
    """How a value reads in a cell: None as empty, booleans as the API spells them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean(str(value))


def render(
    rows: Sequence[Sequence[Any]],
    headers: Sequence[str] | None = None,
    right_align: Sequence[int] = (),
) -> str:
    """A boxed table; `right_align` lists the column indexes to align right."""
    cells = [[cell_text(v).splitlines() or [""] for v in row] for row in rows]
    head = [[h] for h in headers] if headers is not None else None
    ncols = len(headers) if headers is not None else max((len(r) for r in cells), default=0)
    widths = [0] * ncols
    for row in ([head] if head else []) + cells:
        for i, lines in enumerate(row[:ncols]):
            widths[i] = max(widths[i], *(display_width(line) for line in lines))

    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def lines_of(row: list[list[str]]) -> list[str]:
        row = row + [[""]] * (ncols - len(row))
        height = max(len(lines) for lines in row) if row else 1
        out = []
        for n in range(height):
            parts = [
                _pad(lines[n] if n < len(lines) else "", widths[i], i in right_align) for i, lines in enumerate(row)
            ]
            out.append("| " + " | ".join(parts) + " |")
        return out

    out = [rule]
    if head:
        out += lines_of(head) + [rule]
    for row in cells:
        out += lines_of(row)
    out.append(rule)
    return "\n".join(out)


def render_pairs(pairs: Sequence[tuple[str, Any]]) -> str:
    """Two columns, keys right-aligned, no header: the layout of `desc` and `create`."""
    return render([list(p) for p in pairs], right_align=(0,))
