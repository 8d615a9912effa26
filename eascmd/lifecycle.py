"""Commands that change a service: create, modify, start, stop, delete, dw (deleteworkers).

Each prints `[OK] ...` lines and, where the change takes time, waits for it through
common.wait_for so every command shows progress and honours --timeout the same way.
"""

from __future__ import annotations

from typing import Any

import click

from eas.client import EasApiError
from eascmd import table
from eascmd.common import Settings, confirm, echo, ok, pass_settings, timeout_option, wait_for, yes_option
from eascmd.specfile import deep_merge, load_spec, parse_defines
from eascmd.views import intranet_url


def _print_request_id(answer: dict[str, Any]) -> None:
    echo(f"[RequestId]: {answer.get('RequestId', '')}")


def _update(settings: Settings, name: str, partial: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """PUT a change; also says whether the service is stopped, where there is nothing to wait for."""
    client = settings.client()
    stopped = client.describe_service(name).get("Status") == "Stopped"
    return client.update_service(name, partial), stopped


def _wait_running(settings: Settings, name: str, timeout: float, stopped: bool = False) -> None:
    """Wait for Running with progress, except after changing a stopped service (it stays stopped)."""
    if stopped:
        ok(f"Service [{name}] is stopped: the change applies when it starts ('eascmd start {name}')")
        return
    service = wait_for(settings, name, "running", timeout)
    if service and service.get("Status") == "Sleeping":
        ok("Service is sleeping: its first request wakes it")
    else:
        ok("Service is running")


@click.command("create")
@click.argument("file", metavar="FILE.json|FILE.yaml")
@click.option("-r", "--release", "blue_green", is_flag=True,
              help="Blue-green: create a partner of the existing service of that name, with its own "
              "test endpoint; move traffic to it later with 'eascmd release'.")
@yes_option
@timeout_option
@pass_settings
def create_command(settings: Settings, file: str, blue_green: bool, yes: bool, timeout: float) -> None:
    """Create a service from a JSON/YAML file and wait until it runs.

    If a service of that name already exists, asks whether to update it with the file
    instead (-y answers yes).

    \b
    Example:
      eascmd create iris.json
      eascmd create iris_v2.json -r      # blue-green partner of 'iris'
    """
    spec = load_spec(file)
    client = settings.client()
    action, stopped = "Creating service", False
    try:
        answer = client.create_service(spec, blue_green=blue_green)
    except EasApiError as exc:
        meta = spec.get("metadata")
        name = spec.get("name") or (meta.get("name") if isinstance(meta, dict) else None)  # new style: metadata.name
        if exc.status != 409 or not name or blue_green:
            raise
        confirm(
            f"Service [{name}] already exists in [{client.region}]. Update it with {file}?",
            yes,
            f"service [{name}] was not changed; pick another name or delete it first",
        )
        answer, stopped = _update(settings, name, spec)
        action = "Updating service"
    name = str(answer.get("ServiceName") or spec.get("name"))
    _print_request_id(answer)
    service = client.describe_service(name)
    service["IntranetEndpoint"] = service.get("IntranetEndpoint") or answer.get("IntranetEndpoint")
    pairs = [("Intranet Endpoint", intranet_url(service)), ("Token", service.get("AccessToken"))]
    echo(table.render_pairs(pairs))
    ok(action)
    _wait_running(settings, name, timeout, stopped)


@click.command("modify")
@click.argument("name")
@click.option("-D", "defines", multiple=True, metavar="KEY.PATH=VALUE", help="Set a field: -Dmetadata.instance=2.")
@click.option("-s", "--spec", "spec_file", metavar="FILE", help="A partial service description (JSON or YAML).")
@timeout_option
@pass_settings
def modify_command(
    settings: Settings, name: str, defines: tuple[str, ...], spec_file: str | None, timeout: float
) -> None:
    """Change a service (-D fields or -s file) and wait until it runs.

    Values are JSON when they parse (numbers, true/false, objects), strings otherwise;
    -D options are applied on top of -s.

    \b
    Example:
      eascmd modify iris -Dmetadata.instance=2 -Dmetadata.cpu=2
      eascmd modify iris -s patch.json
    """
    if not defines and not spec_file:
        raise click.UsageError("nothing to change: give -Dkey.path=value options or -s FILE")
    partial = load_spec(spec_file) if spec_file else {}
    deep_merge(partial, parse_defines(defines))
    answer, stopped = _update(settings, name, partial)
    _print_request_id(answer)
    if not stopped:
        ok(f"Service [{name}] is updating")
    _wait_running(settings, name, timeout, stopped)


@click.command("start")
@click.argument("name")
@timeout_option
@pass_settings
def start_command(settings: Settings, name: str, timeout: float) -> None:
    """Start a stopped service and wait until it runs.

    \b
    Example:
      eascmd start iris
    """
    _print_request_id(settings.client().start_service(name))
    ok(f"Service [{name}] is starting")
    _wait_running(settings, name, timeout)


@click.command("stop")
@click.argument("name")
@timeout_option
@pass_settings
def stop_command(settings: Settings, name: str, timeout: float) -> None:
    """Stop a service and wait until it is stopped.

    Its instances are released; its configuration and token are kept.

    \b
    Example:
      eascmd stop iris
    """
    _print_request_id(settings.client().stop_service(name))
    ok(f"Service [{name}] is stopping")
    wait_for(settings, name, "stopped", timeout)
    ok(f"Service [{name}] is stopped")


@click.command("delete")
@click.argument("name")
@yes_option
@timeout_option
@pass_settings
def delete_command(settings: Settings, name: str, yes: bool, timeout: float) -> None:
    """Delete a service and wait until it is gone.

    \b
    Example:
      eascmd delete iris -y
    """
    client = settings.client()
    region = client.region
    confirm(f"Are you sure to delete the service [{name}] in [{region}]?", yes, f"service [{name}] was not deleted")
    _print_request_id(client.delete_service(name))
    ok(f"Service [{name}] in region [{region}] is terminating")
    wait_for(settings, name, "deleted", timeout)
    ok("Service was deleted successfully")


@click.command("dw")
@click.argument("name")
@click.argument("instances", nargs=-1, required=True)
@yes_option
@pass_settings
def dw_command(settings: Settings, name: str, instances: tuple[str, ...], yes: bool) -> None:
    """Delete instances of a service: Ray Serve starts new ones in their place, so this
    restarts them (alias: deleteworkers). Names from 'eascmd w', comma-separated as EAS
    takes them, or as separate arguments.

    \b
    Example:
      eascmd dw iris iris-7f3a2
      eascmd deleteworkers iris iris-7f3a2,iris-9c1d0
    """
    client = settings.client()
    names = [n.strip() for item in instances for n in item.split(",") if n.strip()]
    if not names:
        raise click.UsageError("name at least one instance (see 'eascmd w')")
    listed = ",".join(names)
    confirm(
        f"Are you sure to delete the instances [{listed}] of service [{name}] in [{client.region}]?",
        yes,
        "no instance was deleted",
    )
    _print_request_id(client.restart_instances(name, names))
    ok(f"Instance(s) [{listed}] for service [{name}] in region [{client.region}] was deleted successfully")
