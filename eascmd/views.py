"""Read-only commands: ls, desc, w, events (a table, or the raw JSON with --json)."""

from __future__ import annotations

import json
from typing import Any

import click

from eascmd import table
from eascmd.common import Settings, echo, json_option, pass_settings, print_json


def intranet_url(service: dict[str, Any]) -> str:
    """The address to call: the server endpoint joined with the service path."""
    base = str(service.get("IntranetEndpoint") or "").rstrip("/")
    path = str(service.get("ServicePath") or "")
    return base + path if base else path


def pretty_config(raw: Any) -> str:
    """ServiceConfig is a JSON string on the wire; show it indented, or as-is if it is not JSON."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return str(raw)
    return json.dumps(raw, indent=2, ensure_ascii=False) if raw not in (None, "") else ""


@click.command("ls")
@json_option
@pass_settings
def ls_command(settings: Settings, json_output: bool) -> None:
    """List the services in the region.

    \b
    Example:
      eascmd ls
    """
    services = settings.client().list_services()
    if settings.wants_json(json_output):
        print_json(services)
        return
    headers = ["SERVICENAME", "REGION", "INSTANCE", "CREATETIME", "UPDATETIME", "STATUS", "WEIGHT", "SERVICEPATH"]
    fields = ["ServiceName", "Region", "TotalInstance", "CreateTime", "UpdateTime", "Status", "Weight", "ServicePath"]
    echo(table.render([[s.get(f) for f in fields] for s in services], headers))


DESC_FIELDS = [
    "Status", "ServiceName", "CreateTime", "UpdateTime", "AccessToken", "TotalInstance", "RunningInstance",
    "PendingInstance", "DesiredInstance", "CPU", "GPU", "Memory", "Weight", "LatestVersion", "CurrentVersion",
    "LastScaling", "Message",
]  # fmt: skip


def _scaling(decision: Any) -> str:
    """The last scaling decision in one line: when, to how many, why."""
    if not isinstance(decision, dict):
        return ""
    return f"{decision.get('Time')}: {decision.get('DesiredInstance')} instances ({decision.get('Reason')})"


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
    pairs = [(f, _scaling(service.get(f)) if f == "LastScaling" else service.get(f)) for f in DESC_FIELDS]
    pairs.append(("IntranetEndpoint", intranet_url(service)))
    pairs.append(("ServiceConfig", pretty_config(service.get("ServiceConfig"))))
    echo(table.render_pairs(pairs))


@click.command("w")
@click.argument("name")
@json_option
@pass_settings
def w_command(settings: Settings, name: str, json_output: bool) -> None:
    """List the instances of a service and their state.

    \b
    Example:
      eascmd w iris
    """
    instances = settings.client().list_instances(name)
    if settings.wants_json(json_output):
        print_json(instances)
        return
    headers = ["INSTANCENAME", "INNERIP", "HOSTIP", "STARTAT", "RESTARTS", "STATUS", "READY", "REASON", "LASTSTATE"]
    rows = [
        [
            i.get("InstanceName"), i.get("InstanceIp"), i.get("HostIp"), i.get("StartAt"), i.get("Restarts"),
            i.get("Status"), f"{i.get('ReadyProcesses', 0)}/{i.get('TotalProcesses', 0)}", i.get("Reason"),
            i.get("LastState"),
        ]
        for i in instances
    ]  # fmt: skip
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
    rows = [[e.get("Time"), e.get("Type"), e.get("Message")] for e in events]
    echo(table.render(rows, ["TIME", "TYPE", "MESSAGE"]))
