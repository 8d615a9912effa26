"""Commands that move traffic and scale: release, version, traffic, mirror, service
groups, autoscale and cronscale."""

from __future__ import annotations

import json
from typing import Any

import click

from eascmd import table
from eascmd.common import (
    Settings,
    confirm,
    echo,
    json_option,
    ok,
    pass_settings,
    print_json,
    print_request_id,
    timeout_option,
    wait_for,
    yes_option,
)
from eascmd.specfile import load_spec, parse_defines


def _weights(items: tuple[str, ...], option: str) -> dict[str, int]:
    """`svc:70` pairs into {svc: 70}; a clear usage error otherwise."""
    out: dict[str, int] = {}
    for item in items:
        name, _, weight = item.partition(":")
        if not name or not weight.isdigit() or not 0 <= int(weight) <= 100:
            raise click.BadParameter(f"'{item}' is not SERVICE:WEIGHT with a weight from 0 to 100",
                                     param_hint=option)
        out[name] = int(weight)
    return out


@click.command("release")
@click.argument("partner")
@click.option("-w", "--weight", type=click.IntRange(0, 100), required=True,
              help="Percent of the original endpoint's traffic the partner takes.")
@yes_option
@pass_settings
def release_command(settings: Settings, partner: str, weight: int, yes: bool) -> None:
    """Blue-green: send WEIGHT % of the original endpoint's traffic to a partner.

    The partner's own test endpoint closes; the original endpoint never changes.
    Deleting either side sends all traffic to the other.

    \b
    Example:
      eascmd release iris_k3j9dz -w 50
    """
    confirm(f"Confirmed to release this service at weight [{weight}%]?", yes, f"traffic of [{partner}] was not changed")
    answer = settings.client().release(partner, weight)
    print_request_id(str(answer.get("RequestId", "")))
    ok(f"Service [{partner}] is weighted to {weight}% now")


@click.command("version")
@click.argument("name")
@click.argument("version", type=int)
@timeout_option
@pass_settings
def version_command(settings: Settings, name: str, version: int, timeout: float) -> None:
    """Roll a service to one of its versions (see LatestVersion in 'eascmd desc').

    \b
    Example:
      eascmd version iris 1
    """
    ok(str(settings.client().switch_version(name, version).get("Message")))
    wait_for(settings, name, "running", timeout)
    ok("Service is running")


@click.command("traffic")
@click.argument("name")
@click.option("-b", "--backend", "backends", multiple=True, required=True, metavar="SERVICE:WEIGHT",
              help="A service behind NAME's endpoint and its weight; repeat for each.")
@pass_settings
def traffic_command(settings: Settings, name: str, backends: tuple[str, ...]) -> None:
    """A/B inside one endpoint: split NAME's traffic over services by weight.

    \b
    Example:
      eascmd traffic iris -b iris:80 -b iris_v2:20
    """
    ok(str(settings.client().set_traffic(name, _weights(backends, "-b")).get("Message")))


@click.command("mirror")
@click.argument("name")
@click.argument("target", required=False)
@click.option("-p", "--percent", type=click.IntRange(0, 100), default=100, show_default=True,
              help="Share of requests copied to TARGET.")
@click.option("--off", is_flag=True, help="Stop mirroring NAME.")
@pass_settings
def mirror_command(settings: Settings, name: str, target: str | None, percent: int, off: bool) -> None:
    """Copy a share of NAME's requests to a shadow service; its answers are dropped.

    \b
    Example:
      eascmd mirror iris iris_shadow -p 10
      eascmd mirror iris --off
    """
    client = settings.client()
    if off:
        ok(str(client.drop_mirror(name).get("Message")))
        return
    if not target:
        raise click.UsageError("name the shadow service (TARGET), or pass --off")
    ok(str(client.set_mirror(name, target, percent).get("Message")))


@click.group("group")
def group_command() -> None:
    """Service groups: one endpoint that splits traffic over member services.

    \b
    Example:
      eascmd group create recs -m recs_a:50 -m recs_b:50
      eascmd group modify recs -m recs_a:90 -m recs_b:10
    """


def _members(group: dict[str, Any]) -> str:
    """`svc:weight, ...` from a group's members (ours: under `Ext`)."""
    return ", ".join(f"{m['Service']}:{m['Weight']}" for m in (group.get("Ext") or {}).get("Members", []))


def _show_group(group: dict[str, Any]) -> None:
    echo(table.render_pairs([
        ("GroupName", group.get("Name")), ("AccessToken", group.get("AccessToken")),
        ("TrafficMode", group.get("TrafficMode")), ("Members", _members(group)),
        ("Endpoint", group.get("IntranetEndpoint", "")),
    ]))


@group_command.command("create")
@click.argument("name")
@click.option("-m", "--member", "members", multiple=True, required=True, metavar="SERVICE:WEIGHT")
@pass_settings
def group_create(settings: Settings, name: str, members: tuple[str, ...]) -> None:
    """Create group NAME over existing services."""
    _show_group(settings.client().create_group(name, _weights(members, "-m")))
    ok(f"Group [{name}] is serving")


@group_command.command("modify")
@click.argument("name")
@click.option("-m", "--member", "members", multiple=True, required=True, metavar="SERVICE:WEIGHT")
@pass_settings
def group_modify(settings: Settings, name: str, members: tuple[str, ...]) -> None:
    """Change the members or weights of group NAME."""
    _show_group(settings.client().update_group(name, _weights(members, "-m")))
    ok(f"Group [{name}] updated")


@group_command.command("ls")
@json_option
@pass_settings
def group_ls(settings: Settings, json_output: bool) -> None:
    """List groups."""
    groups = settings.client().list_groups()
    if settings.wants_json(json_output):
        print_json(groups)
        return
    rows = [[g.get("Name"), g.get("TrafficMode"), _members(g), g.get("IntranetEndpoint")] for g in groups]
    echo(table.render(rows, ["GROUPNAME", "TRAFFICMODE", "MEMBERS", "ENDPOINT"]))


@group_command.command("desc")
@click.argument("name")
@json_option
@pass_settings
def group_desc(settings: Settings, name: str, json_output: bool) -> None:
    """Show group NAME with its token."""
    group = settings.client().describe_group(name)
    if settings.wants_json(json_output):
        print_json(group)
        return
    _show_group(group)


@group_command.command("delete")
@click.argument("name")
@yes_option
@pass_settings
def group_delete(settings: Settings, name: str, yes: bool) -> None:
    """Delete group NAME (its members keep running)."""
    confirm(f"Are you sure to delete the group [{name}]?", yes, f"group [{name}] was not deleted")
    ok(str(settings.client().delete_group(name).get("Message")))


COMMANDS = [release_command, version_command, traffic_command, mirror_command, group_command]


def _service_arg(settings: Settings, target: str) -> str:
    """EAS's `[region/]service`: the service name, after checking a region given is ours."""
    region, slash, name = target.rpartition("/")
    if slash and region != settings.client().region:
        raise click.BadParameter(f"region '{region}' is not this config's region '{settings.client().region}'",
                                 param_hint="SERVICE")
    return name


#: `-Dstrategies.<metric>=<threshold>` metrics, as EAS's eascmd names them.
AUTOSCALE_KEYS = ("min", "max", "strategies", "behavior")


def autoscaler_block(defines: tuple[str, ...]) -> dict[str, Any]:
    """EAS's `-Dmin=1 -Dmax=4 -Dstrategies.qps=10 [-Dstrategies.cpu=70]
    [-Dbehavior.scaleDown.stabilizationWindowSeconds=300]` as the autoscaler body."""
    values = parse_defines(defines)
    unknown = sorted(set(values) - set(AUTOSCALE_KEYS))
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(unknown)}: use -Dmin=, -Dmax=, -Dstrategies.<metric>= "
                                 "and -Dbehavior.<...>=", param_hint="-D")
    strategies = values.get("strategies") or {}
    if "max" not in values or not isinstance(strategies, dict) or not strategies:
        raise click.UsageError("set -Dmax= and at least one -Dstrategies.<metric>=<threshold> (qps, cpu, ...)")
    block: dict[str, Any] = {"min": values.get("min", 1), "max": values["max"],
                             "scaleStrategies": [{"metricName": m, "threshold": t} for m, t in strategies.items()]}
    if "behavior" in values:
        block["behavior"] = values["behavior"]
    return block


@click.command("autoscale")
@click.argument("args", nargs=-1, required=True, metavar="[rm|desc] [REGION/]SERVICE")
@click.option("-D", "defines", multiple=True, metavar="KEY=VALUE",
              help="-Dmin=1 -Dmax=4 -Dstrategies.qps=10 (EAS's syntax).")
@json_option
@pass_settings
def autoscale_command(settings: Settings, args: tuple[str, ...], defines: tuple[str, ...], json_output: bool) -> None:
    """Set, show or remove a service's autoscaler (EAS: desired = ceil(current * metric / threshold)).

    \b
    Example:
      eascmd autoscale iris -Dmin=1 -Dmax=4 -Dstrategies.qps=20
      eascmd autoscale local/iris -Dmin=1 -Dmax=8 -Dstrategies.cpu=70
      eascmd autoscale desc iris            # settings, current metrics, last decision
      eascmd autoscale rm iris
    """
    client = settings.client()
    verb, name = _verb_and_service(settings, args, "eascmd autoscale [rm|desc] [REGION/]SERVICE [-D...]")
    if verb == "rm":
        print_request_id(str(client.delete_autoscaler(name).get("RequestId", "")))
        ok(f"Autoscaler of service [{name}] is removed")
        return
    if verb == "desc" or not defines:
        shown = client.describe_autoscaler(name)
        if settings.wants_json(json_output):
            print_json(shown)
            return
        last = (shown.get("Ext") or {}).get("LastScaling")
        strategies = ", ".join(f"{s['metricName']} {s['threshold']:g}" for s in shown.get("ScaleStrategies") or [])
        metrics = ", ".join(f"{m['metricName']} {m['value']:.1f}" for m in shown.get("CurrentMetrics") or [])
        echo(table.render_pairs([
            ("ServiceName", shown.get("ServiceName")), ("MinReplica", shown.get("MinReplica")),
            ("MaxReplica", shown.get("MaxReplica")), ("ScaleStrategies", strategies), ("CurrentMetrics", metrics),
            ("Behavior", json.dumps(shown.get("Behavior") or {})),
            ("LastScaling", f"{last['DesiredInstance']} instances ({last['Reason']})" if last else ""),
        ]))
        return
    block = autoscaler_block(defines)
    print_request_id(str(client.set_autoscaler(name, block).get("RequestId", "")))
    ok(f"Autoscaler of service [{name}]: {block['min']}..{block['max']} instances on "
       + ", ".join(f"{s['metricName']} {s['threshold']:g}" for s in block["scaleStrategies"]))


def _verb_and_service(settings: Settings, args: tuple[str, ...], usage: str) -> tuple[str, str]:
    """`[rm|desc] [REGION/]SERVICE`: the verb ("" to set) and the service name."""
    verb, target = (args[0], args[1:]) if args[0] in ("rm", "desc") else ("", args)
    if len(target) != 1:
        raise click.UsageError(f"name one service: {usage}")
    return verb, _service_arg(settings, target[0])


@click.command("cronscale")
@click.argument("args", nargs=-1, required=True, metavar="[rm|desc] [REGION/]SERVICE")
@click.option("-s", "--spec", "spec_file", metavar="FILE",
              help="EAS's cron scaler body: {\"ScaleJobs\": [{\"Name\", \"Schedule\", \"TargetSize\"}], "
                   "\"ExcludeDates\", \"TimeZone\"} (JSON or YAML).")
@json_option
@pass_settings
def cronscale_command(settings: Settings, args: tuple[str, ...], spec_file: str | None, json_output: bool) -> None:
    """Set, show or remove a service's cron scaler: instance counts on a schedule.

    Schedules are EAS's six-field cron expressions, seconds first ("0 0 8 * * *": 08:00
    every day), read in TimeZone (default UTC); ExcludeDates lists times no job fires at.

    \b
    Example:
      eascmd cronscale iris -s cron.json
      eascmd cronscale desc iris
      eascmd cronscale rm iris
    """
    client = settings.client()
    verb, name = _verb_and_service(settings, args, "eascmd cronscale [rm|desc] [REGION/]SERVICE [-s FILE]")
    if verb == "rm":
        print_request_id(str(client.delete_cron_scaler(name).get("RequestId", "")))
        ok(f"Cron scaler of service [{name}] is removed")
        return
    if verb == "desc" or not spec_file:
        shown = client.describe_cron_scaler(name)
        if settings.wants_json(json_output):
            print_json(shown)
            return
        rows = [[j.get("Name"), j.get("Schedule"), j.get("TargetSize"), j.get("LastProbeTime")]
                for j in shown.get("ScaleJobs") or []]
        echo(table.render(rows, ["NAME", "SCHEDULE", "TARGETSIZE", "LASTFIRED"]))
        if shown.get("ExcludeDates"):
            echo(f"ExcludeDates: {', '.join(shown['ExcludeDates'])} (TimeZone {shown.get('TimeZone') or 'UTC'})")
        return
    body = load_spec(spec_file)
    print_request_id(str(client.set_cron_scaler(name, body).get("RequestId", "")))
    ok(f"Cron scaler of service [{name}]: {len(body.get('ScaleJobs') or [])} jobs")


COMMANDS += [autoscale_command, cronscale_command]
