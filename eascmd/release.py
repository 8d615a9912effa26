"""Commands that move traffic: release, version, traffic, mirror, and service groups."""

from __future__ import annotations

import json

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
    timeout_option,
    wait_for,
    yes_option,
)


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
    confirm(f"Release [{partner}] with weight {weight}%?", yes, f"traffic of [{partner}] was not changed")
    answer = settings.client().release(partner, weight)
    ok(str(answer.get("Message", "released")))


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


def _show_group(group: dict) -> None:  # type: ignore[type-arg]
    members = ", ".join(f"{m['Service']}:{m['Weight']}" for m in group.get("Members", []))
    echo(table.render_pairs([
        ("GroupName", group.get("GroupName")), ("AccessToken", group.get("AccessToken")),
        ("Members", members), ("Endpoint", f"{group.get('IntranetEndpoint', '')}{group.get('GroupPath', '')}"),
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
    rows = [[g["GroupName"], ", ".join(f"{m['Service']}:{m['Weight']}" for m in g["Members"]), g["GroupPath"]]
            for g in groups]
    echo(table.render(rows, ["GROUPNAME", "MEMBERS", "GROUPPATH"]))


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


@click.command("autoscale")
@click.argument("name")
@click.option("--min", "min_", type=click.IntRange(0, 1000), help="Fewest instances (0 allows scale to zero).")
@click.option("--max", "max_", type=click.IntRange(1, 1000), help="Most instances.")
@click.option("--qps", type=click.FloatRange(min=0, min_open=True), help="Target requests/s per instance.")
@click.option("--cpu", type=click.FloatRange(min=0, min_open=True), help="Target CPU %% per instance.")
@click.option("--inflight", type=click.FloatRange(min=0, min_open=True), help="Target requests in flight per instance.")
@click.option("--scale-down-window", type=click.FloatRange(min=0), help="Seconds a lower load must last before scaling down (default 300).")
@click.option("--off", is_flag=True, help="Remove the autoscaler.")
@json_option
@pass_settings
def autoscale_command(settings: Settings, name: str, min_: int | None, max_: int | None, qps: float | None,
                      cpu: float | None, inflight: float | None, scale_down_window: float | None, off: bool,
                      json_output: bool) -> None:
    """Show or set NAME's autoscaler (EAS: desired = ceil(current * metric / threshold)).

    \b
    Example:
      eascmd autoscale iris --min 1 --max 4 --qps 20
      eascmd autoscale iris                 # show settings and the last decision
      eascmd autoscale iris --off
    """
    client = settings.client()
    if off:
        client.update_service(name, {"autoscaler": None})
        ok(f"Autoscaler of [{name}] removed")
        return
    strategies = [{"metricName": m, "threshold": v} for m, v in (("qps", qps), ("cpu", cpu), ("inflight", inflight))
                  if v is not None]
    if max_ is None and not strategies:
        service = client.describe_service(name)
        config = json.loads(service.get("ServiceConfig") or "{}")
        shown = {k: config.get(k) for k in ("autoscaler", "cron_scaler", "sleep")}
        shown["last_scaling"] = service.get("LastScaling")
        if settings.wants_json(json_output):
            print_json(shown)
        else:
            echo(table.render_pairs([(k, json.dumps(v)) for k, v in shown.items()]))
        return
    if max_ is None or not strategies:
        raise click.UsageError("set --max and at least one of --qps, --cpu, --inflight (or --off)")
    block: dict = {"min": 1 if min_ is None else min_, "max": max_, "scaleStrategies": strategies}
    if scale_down_window is not None:
        block["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": scale_down_window}}
    client.update_service(name, {"autoscaler": block})
    ok(f"Autoscaler of [{name}]: {block['min']}..{max_} instances on "
       + ", ".join(f"{s['metricName']} {s['threshold']:g}" for s in strategies))


COMMANDS.append(autoscale_command)
