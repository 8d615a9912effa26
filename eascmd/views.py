"""Read-only commands: ls (list), desc, w (showworkers), events, logs (a table, or the
raw JSON with --json). Times print as EAS's eascmd prints them, `2026-11-23 09:00:00`
in the local time zone; `--json` keeps the API's ISO 8601 UTC."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import click

from eascmd import table
from eascmd.common import Settings, echo, eas_time, json_option, pass_settings, print_json, print_request_id


def intranet_url(service: dict[str, Any]) -> str:
    """The address to call: EAS answers the full URL (`.../api/predict/<name>`)."""
    return str(service.get("IntranetEndpoint") or "")


def service_path(service: dict[str, Any]) -> str:
    """`/api/predict/<name>`: the path of the endpoint URL (what `ls` shows as SERVICEPATH)."""
    return urlsplit(intranet_url(service)).path


def pretty_config(raw: Any) -> str:
    """ServiceConfig is a JSON string on the wire; show it indented, or as-is if it is not JSON."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return str(raw)
    return json.dumps(raw, indent=2, ensure_ascii=False) if raw not in (None, "") else ""


@click.command("ls")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Only services with this label (repeat for several; all must match).")
@json_option
@pass_settings
def ls_command(settings: Settings, json_output: bool, labels: tuple[str, ...]) -> None:
    """List the services in the region.

    \b
    Example:
      eascmd ls
      eascmd ls --label team=search
    """
    wanted = {}
    for label in labels:
        key, eq, value = label.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{label!r} is not KEY=VALUE", param_hint="--label")
        wanted[key] = value
    services = settings.client().list_services(labels=wanted or None)
    if settings.wants_json(json_output):
        print_json(services)
        return
    print_request_id(settings.client().last_request_id)
    headers = ["SERVICENAME", "REGION", "INSTANCE", "CREATETIME", "UPDATETIME", "STATUS", "WEIGHT", "SERVICEPATH"]
    rows = [[s.get("ServiceName"), s.get("Region"), s.get("TotalInstance"), eas_time(s.get("CreateTime")),
             eas_time(s.get("UpdateTime")), s.get("Status"), s.get("Weight"), service_path(s)] for s in services]
    echo(table.render(rows, headers))


DESC_FIELDS = [
    "Status", "ServiceName", "Region", "CreateTime", "UpdateTime", "AccessToken", "TotalInstance",
    "RunningInstance", "PendingInstance", "DesiredInstance", "CPU", "GPU", "Memory", "Weight", "LatestVersion",
    "CurrentVersion", "LastScaling", "Message",
]  # fmt: skip


def _desc_value(service: dict[str, Any], row: str) -> Any:
    """A `desc` row from EAS's fields (and ours in `Ext`), written as EAS's eascmd does."""
    ext = service.get("Ext") or {}
    if row == "CPU":
        return ext.get("Cpu", service.get("Cpu"))
    if row == "GPU":
        return service.get("Gpu")
    if row == "Memory":
        return f"{service.get('Memory') or 0}M"
    if row in ("CreateTime", "UpdateTime"):
        return eas_time(service.get(row))
    if row == "DesiredInstance":
        return ext.get("DesiredInstance")
    if row == "LastScaling":
        return _scaling(ext.get("LastScaling"))
    return service.get(row)


def _scaling(decision: Any) -> str:
    """The last scaling decision in one line: when, to how many, why."""
    if not isinstance(decision, dict):
        return ""
    return f"{eas_time(decision.get('Time'))}: {decision.get('DesiredInstance')} instances ({decision.get('Reason')})"


@click.command("desc")
@click.argument("name")
@json_option
@pass_settings
def desc_command(settings: Settings, name: str, json_output: bool) -> None:
    """Show a service: status, token, resources and configuration.

    \b
    Example:
      eascmd desc iris
    """
    service = settings.client().describe_service(name)
    if settings.wants_json(json_output):
        print_json(service)
        return
    pairs = [(f, _desc_value(service, f)) for f in DESC_FIELDS]
    pairs.append(("IntranetEndpoint", intranet_url(service)))
    queues = (service.get("Ext") or {}).get("Queue")
    if isinstance(queues, dict):  # an Async service: its two queues
        for key, label in (("Source", "QueueLength"), ("Sink", "SinkLength")):
            q = queues.get(key) or {}
            pairs.append((label, f"{q.get('Length', 0)} ({q.get('Pending', 0)} pending, "
                                 f"last index {q.get('LastIndex', 0)})"))
    pairs.append(("ServiceConfig", pretty_config(service.get("ServiceConfig"))))
    echo(table.render_pairs(pairs))


def _last_state(value: Any) -> str:
    """LASTSTATE: the last entry of EAS's `LastState` list as compact JSON, else empty."""
    if isinstance(value, list):
        value = value[-1] if value else None
    return json.dumps(value, separators=(",", ":")) if value else ""


@click.command("w")
@click.argument("name")
@json_option
@pass_settings
def w_command(settings: Settings, name: str, json_output: bool) -> None:
    """List the instances of a service and their state (alias: showworkers).

    \b
    Example:
      eascmd w iris
    """
    client = settings.client()
    instances = client.list_instances(name)
    if settings.wants_json(json_output):
        print_json(instances)
        return
    print_request_id(client.last_request_id)
    headers = ["INSTANCENAME", "INNERIP", "HOSTIP", "STARTAT", "RESTARTS", "STATUS", "READY", "REASON", "LASTSTATE"]
    rows = [
        [
            i.get("InstanceName"), i.get("InnerIP"), i.get("HostIP"), eas_time(i.get("StartAt")),
            i.get("RestartCount"), i.get("Status"), f"[{i.get('ReadyProcesses', 0)}/{i.get('TotalProcesses', 0)}]",
            i.get("Reason"), _last_state(i.get("LastState")),
        ]
        for i in instances
    ]  # fmt: skip
    if any("ContainerState" in (i.get("Ext") or {}) for i in instances):  # a container service
        headers.append("CONTAINER")
        for row, i in zip(rows, instances):
            row.append((i.get("Ext") or {}).get("ContainerState", ""))
    echo(table.render(rows, headers))


@click.command("events")
@click.argument("name")
@json_option
@pass_settings
def events_command(settings: Settings, name: str, json_output: bool) -> None:
    """Show the events of a service.

    \b
    Example:
      eascmd events iris
    """
    events = settings.client().list_events(name)
    if settings.wants_json(json_output):
        print_json(events)
        return
    # The API answers newest first; the table reads like a log, oldest first.
    rows = [[eas_time(e.get("Time")), e.get("Type"), e.get("Reason"), e.get("Message")] for e in reversed(events)]
    echo(table.render(rows, ["TIME", "TYPE", "REASON", "MESSAGE"]))


@click.command("logs")
@click.argument("name")
@click.option("-i", "--instance", metavar="INSTANCE", help="One instance (names from 'eascmd w'); default: all.")
@click.option("-n", "--lines", type=click.IntRange(1, 10_000), default=200, show_default=True,
              help="How many of the latest lines.")
@click.option("-k", "--keyword", help="Only lines containing this text.")
@json_option
@pass_settings
def logs_command(settings: Settings, name: str, instance: str | None, lines: int, keyword: str | None,
                 json_output: bool) -> None:
    """Show the latest log lines of a service's instances (what their code prints).

    Without -i, every instance's lines, each prefixed with [<instance>].

    \b
    Example:
      eascmd logs iris
      eascmd logs iris -i iris-7f3a2 -n 50 -k ERROR
    """
    answer = settings.client().service_logs(name, instance=instance, keyword=keyword, page_size=lines)
    if settings.wants_json(json_output):
        print_json(answer)
        return
    for line in answer.get("Logs") or []:
        echo(str(line))
