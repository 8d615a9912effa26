"""What every eascmd command shares: settings, the client, options, prompts and waiting."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

import click

from eas.client import ManagementClient
from eascmd.progress import ProgressPrinter
from eascmd.table import clean

F = TypeVar("F", bound=Callable[..., Any])

#: Default --timeout of the commands that wait, in seconds.
DEFAULT_TIMEOUT_S = 600.0


@dataclass
class Settings:
    """Global options, and the client built from them on first use (so `config` needs no config)."""

    config_path: str
    json_output: bool = False
    _client: ManagementClient | None = field(default=None, repr=False)

    def client(self) -> ManagementClient:
        if self._client is None:
            self._client = ManagementClient.from_config(self.config_path)
        return self._client

    def wants_json(self, flag: bool) -> bool:
        return flag or self.json_output


pass_settings = click.make_pass_decorator(Settings)


def echo(message: str = "", err: bool = False) -> None:
    """Print a line: every line eascmd prints goes through here, control characters
    and terminal escapes from server text stripped (eascmd/table.py `clean`)."""
    click.echo(clean(message), err=err)


def ok(message: str) -> None:
    echo(f"[OK] {message}")


def print_json(data: Any) -> None:
    echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_request_id(request_id: str) -> None:
    """`[RequestId]: ...`, the first line of EAS's eascmd output for a call."""
    echo(f"[RequestId]: {request_id}")


def eas_time(value: Any) -> str:
    """An API time (ISO 8601, UTC) as EAS's eascmd prints it: `2026-11-23 17:00:00`, in
    the local time zone; anything else as it is."""
    if not isinstance(value, str) or not value:
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return (moment.astimezone() if moment.tzinfo else moment).strftime("%Y-%m-%d %H:%M:%S")


def json_option(func: F) -> F:
    return click.option("--json", "json_output", is_flag=True, help="Print the raw JSON instead of a table.")(func)


def yes_option(func: F) -> F:
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(func)


def timeout_option(func: F) -> F:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=DEFAULT_TIMEOUT_S,
        show_default=True,
        help="Seconds to wait for the service before giving up (it keeps going on the server).",
    )(func)


class Cancelled(click.ClickException):
    """The operator answered no; exit 1 and say nothing was done."""


def confirm(question: str, yes: bool, nothing_done: str) -> None:
    """Ask `question [Y/n]` on stdin (default yes) unless -y; raise Cancelled on no."""
    if yes:
        return
    if not click.confirm(question, default=True, prompt_suffix=" "):
        raise Cancelled(f"cancelled: {nothing_done}")


def wait_for(settings: Settings, name: str, goal: Literal["running", "stopped", "deleted"],
             timeout: float) -> dict[str, Any] | None:
    """The one wait used by create/modify/start/stop/delete, printing progress lines as it goes.

    A Failed service raises ServiceFailedError (reported as `[FAIL] Service failed: ...`);
    a timeout becomes an error saying how to keep watching.
    """
    client = settings.client()
    # While it is deleted EAS's eascmd repeats `[OK] Service is terminating`.
    printer = ProgressPrinter(echo, line=(lambda _: "[OK] Service is terminating") if goal == "deleted" else None)
    try:
        if goal == "deleted":
            client.wait_until_deleted(name, printer, timeout)
            return None
        if goal == "stopped":
            return client.wait_for_status(name, {"Stopped"}, printer, timeout)
        return client.wait_until_running(name, printer, timeout)
    except TimeoutError as exc:
        raise click.ClickException(
            f"{exc}: the server keeps working on it; follow it with 'eascmd desc {name}' and "
            f"'eascmd events {name}', or wait longer with --timeout"
        ) from None
