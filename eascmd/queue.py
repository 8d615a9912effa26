"""`eascmd queue`: inspect and drain the queues of an Async service (docs/async.md).

QUEUE is a service name (its input queue) or `<service>/sink` (its answers). The
service's token comes from the management API; the queue is then called at the
service's endpoint with the same protocol as the official SDKs' QueueClient.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from eas.client.queue import Frame, QueueClient, QueueError, queue_url
from eascmd import table
from eascmd.common import Settings, confirm, echo, json_option, ok, pass_settings, print_json, yes_option

T = TypeVar("T")


def _client(settings: Settings, queue: str) -> QueueClient:
    name, _, rest = queue.partition("/")
    if rest not in ("", "sink"):
        raise click.BadParameter(f"{queue!r}: write a service name or <service>/sink", param_hint="QUEUE")
    service = settings.client().describe_service(name)
    if "Queue" not in (service.get("Ext") or {}):
        raise click.ClickException(f"'{name}' is not an Async service: it has no queue "
                                   '(create it with "metadata": {"type": "Async"})')
    return QueueClient(queue_url(service, rest == "sink"), str(service.get("AccessToken") or ""))


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or key.startswith("_"):
            raise click.BadParameter(f"{item!r}: write KEY=VALUE (a key never starts with _)", param_hint="-t")
        tags[key] = value
    return tags


def _printable(data: bytes, limit: int = 80) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _frame_json(f: Frame) -> dict[str, object]:
    try:
        data: object = f.data.decode("utf-8")
    except UnicodeDecodeError:
        data = {"base64": base64.b64encode(f.data).decode()}
    return {"Index": f.index, "Tags": f.tags, "Data": data, "Message": f.message}


@click.group("queue")
def queue_command() -> None:
    """Inspect and drain the queues of an Async service.

    \b
    Example:
      eascmd queue attrs sdxl
      eascmd queue put sdxl -d '{"prompt": "a cat"}' -t user=alice
      eascmd queue get sdxl/sink --length 10 --delete
      eascmd queue truncate sdxl/sink -y
    """


@queue_command.command("attrs")
@click.argument("queue")
@json_option
@pass_settings
def attrs_command(settings: Settings, queue: str, json_output: bool) -> None:
    """A queue's attributes: length, first and last index, limits."""
    with _client(settings, queue) as q:
        attrs = _call(q.attributes)
    if settings.wants_json(json_output):
        print_json(attrs)
        return
    echo(table.render_pairs(sorted(attrs.items())))


@queue_command.command("put")
@click.argument("queue")
@click.option("-d", "--data", help="The request body.")
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, exists=True), help="Read the body from FILE.")
@click.option("-t", "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--priority", type=click.IntRange(min=0), default=0, help="Higher is taken first.")
@json_option
@pass_settings
def put_command(settings: Settings, queue: str, data: str | None, path: str | None, tags: tuple[str, ...],
                priority: int, json_output: bool) -> None:
    """Put one request on a queue."""
    if (data is None) == (path is None):
        raise click.UsageError("give the body with exactly one of -d DATA or -f FILE")
    body = Path(path).read_bytes() if path else (data or "").encode()
    with _client(settings, queue) as q:
        index, request_id = _call(q.put, body, _tags(tags), priority)
    if settings.wants_json(json_output):
        print_json({"Index": index, "RequestId": request_id})
        return
    ok(f"Put on {queue}: index {index}, request id {request_id}")


@queue_command.command("get")
@click.argument("queue")
@click.option("--index", type=click.IntRange(min=0), default=0, help="From this index on (0: the head).")
@click.option("--length", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--request-id", help="Only the entry of this request.")
@click.option("--delete", is_flag=True, help="Remove what is read (drain).")
@json_option
@pass_settings
def get_command(settings: Settings, queue: str, index: int, length: int, request_id: str | None, delete: bool,
                json_output: bool) -> None:
    """Read entries of a queue (kept unless --delete)."""
    with _client(settings, queue) as q:
        frames = _call(q.get, index, length, request_id, delete)
    if settings.wants_json(json_output):
        print_json([_frame_json(f) for f in frames])
        return
    rows = [[f.index, f.tags.get("requestId", ""), json.dumps({k: v for k, v in f.tags.items() if k != "requestId"}),
             _printable(f.data), f.message] for f in frames]
    echo(table.render(rows, ["INDEX", "REQUESTID", "TAGS", "DATA", "MESSAGE"]))
    if delete:
        ok(f"{len(frames)} entries read and removed from {queue}")


@queue_command.command("truncate")
@click.argument("queue")
@click.option("--index", type=click.IntRange(min=1), default=None,
              help="Remove the entries before this index [default: all of them].")
@yes_option
@json_option
@pass_settings
def truncate_command(settings: Settings, queue: str, index: int | None, yes: bool, json_output: bool) -> None:
    """Remove the entries of a queue (all, or those before --index)."""
    what = "every entry" if index is None else f"the entries before index {index}"
    confirm(f"Are you sure to remove {what} of [{queue}]?", yes, f"[{queue}] was not changed")
    with _client(settings, queue) as q:
        below = index if index is not None else int(_call(q.attributes).get("stream.lastEntry", "0")) + 1
        _call(q.truncate, below)
        left = int(_call(q.attributes).get("stream.length", "0"))
    if settings.wants_json(json_output):
        print_json({"Queue": queue, "TruncatedBelow": below, "Length": left})
        return
    ok(f"Truncated {queue} below index {below}: {left} entries left")


def _call(fn: Callable[..., T], *args: Any) -> T:
    """A queue call; its failure as eascmd's one-line error."""
    try:
        return fn(*args)
    except QueueError as exc:
        raise click.ClickException(f"{exc}: check the service with 'eascmd desc'") from None
