"""eascmd entry point: the command group, the `config` command and error reporting.

Every failure ends as `[ERROR] <what happened>: <what to do>` on stderr with a non-zero
exit status, never a traceback (set EASCMD_DEBUG=1 to see one for unexpected errors).
Reporting lives in EasGroup so CliRunner, `python -m eascmd` and the console script
behave the same.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

import click

import eas
from eas.client import config
from eas.client import EasApiError, ServiceFailedError
from eascmd import table
from eascmd.common import Settings, confirm, echo, json_option, ok, pass_settings, print_json, yes_option
from eascmd.lifecycle import (
    create_command,
    delete_command,
    dw_command,
    modify_command,
    start_command,
    stop_command,
)
from eascmd import bml, release
from eascmd.queue import queue_command
from eascmd.upload import upload_command
from eascmd.views import desc_command, events_command, logs_command, ls_command, w_command

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


# click >= 8.2 raises this for a bare `eascmd`; older versions print the help themselves.
class _NeverRaised(click.UsageError):
    pass


_NoArgsIsHelp: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


def _version() -> str:
    """The installed distribution's version; eascmd also runs from a source checkout."""
    try:
        return metadata.version("eas-serving")
    except metadata.PackageNotFoundError:
        return str(getattr(eas, "__version__", "0+unknown"))


def _error(message: str) -> None:
    echo(f"[ERROR] {message}", err=True)


def _api_error_text(exc: EasApiError, settings: Settings | None) -> str:
    """The server's message plus the next step for the errors an operator can fix."""
    where = settings.config_path if settings else "your eascmd config"
    if exc.code == "RegionNotFound":
        return f"{exc}: set the region in {where} with 'eascmd config -i <id> -k <key> -r <region>'"
    if exc.status == 401 and exc.code != "InvalidTimeStamp.Expired":
        return (
            f"{exc}: the access id or key is wrong; check {where} (the pair of <data-dir>/eascmd.conf of the server, "
            "or one from 'eascmd accesskey create') or rewrite it with 'eascmd config -i <id> -k <key>'"
        )
    if "eascmd" in exc.message:  # the server already says what to do
        return str(exc)
    if exc.status == 404:
        return f"{exc}: run 'eascmd ls' to see the services"
    if exc.status == 409:
        return f"{exc}: pick another name, or change the existing service with 'eascmd modify'"
    return str(exc)


class EasGroup(click.Group):
    """A click group that reports every error as `[ERROR] ...` instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EasApiError as exc:
            raise click.ClickException(_api_error_text(exc, ctx.find_object(Settings))) from None
        except config.ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        except ServiceFailedError as exc:
            name = exc.service.get("ServiceName") or "<name>"
            echo(f"[FAIL] Service failed: {exc.message}", err=True)
            raise click.ClickException(
                f"see 'eascmd events {name}' for what happened; fix the description and run "
                f"'eascmd modify {name} -s FILE', or 'eascmd delete {name}'"
            ) from None
        except OSError as exc:
            raise click.ClickException(f"{exc}: check the path and its permissions") from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        code = 1
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except _NoArgsIsHelp as exc:  # plain `eascmd`: the help, not an error
            exc.show()
            code = exc.exit_code
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "eascmd"
            _error(f"{exc.format_message()} (see '{command} --help')")
            code = exc.exit_code
        except click.ClickException as exc:
            _error(exc.format_message())
            code = exc.exit_code
        except click.Abort:
            _error("aborted: the command did not finish (a change already sent keeps going on the server)")
        except Exception as exc:  # last resort: an operator should never see a traceback
            if os.environ.get("EASCMD_DEBUG"):
                traceback.print_exc()
            _error(
                f"unexpected {type(exc).__name__}: {exc}. This is a bug in eascmd: please report it "
                "(set EASCMD_DEBUG=1 to print the traceback)"
            )
        sys.exit(code)


@click.group("eascmd", cls=EasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    help="eascmd config file [default: $EASCMD_CONFIG or ~/.eascmd/eascmd.conf].",
)
@click.option("--json", "json_output", is_flag=True, help="Read commands print raw JSON instead of tables.")
@click.version_option(_version(), message="eascmd %(version)s", help="Show the version.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, json_output: bool) -> None:
    """eascmd: deploy and manage model services on eas-server (PAI-EAS compatible).

    \b
    Example:
      eascmd config -i <AccessKeyId> -k <AccessKeySecret> -e 127.0.0.1:8080
      eascmd create iris.json
    """
    ctx.obj = Settings(config_path=config_path or str(config.default_path()), json_output=json_output)


def endpoint_url(endpoint: str) -> str:
    """`-e`: a URL, or a bare host[:port] as EAS's eascmd takes (`pai-eas.cn-beijing.aliyuncs.com`),
    which means plain http:// (what eas-server listens on unless TLS is put in front)."""
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    if not endpoint.startswith(("http://", "https://")) or not endpoint.split("://", 1)[1]:
        raise click.BadParameter(f"{endpoint!r} is not a server address: write it like 127.0.0.1:8080 or "
                                 f"{DEFAULT_ENDPOINT}", param_hint="-e")
    return endpoint


@cli.command("config")
@click.option("-i", "--access-id", required=True, help="AccessKey id (access_id of <data-dir>/eascmd.conf).")
@click.option("-k", "--access-key", required=True, help="AccessKey secret.")
@click.option("-e", "--endpoint",
              help=f"Server address, a host[:port] or a URL [default: kept, or {DEFAULT_ENDPOINT}].")
@click.option("-r", "--region", help="Region of the server [default: kept, or local].")
@pass_settings
def config_command(
    settings: Settings, access_id: str, access_key: str, endpoint: str | None, region: str | None
) -> None:
    """Write the config file: server endpoint and AccessKey pair.

    \b
    Example:
      eascmd config -i <AccessKeyId> -k <AccessKeySecret> -e 127.0.0.1:8080
    """
    try:
        previous: config.ClientConfig | None = config.read(settings.config_path)
    except config.ConfigError:
        previous = None
    endpoint = endpoint_url(endpoint or (previous.endpoint if previous else DEFAULT_ENDPOINT))
    region = region or (previous.region if previous else "local")
    config.write(settings.config_path, config.ClientConfig(endpoint, access_id, access_key, region))
    echo(f"Configuration saved to: {settings.config_path}")


@cli.group("accesskey")
def accesskey_command() -> None:
    """AccessKey pairs of the management API: an admin pair may do anything, a readonly
    pair only read. The admin pair of eascmd.conf is the first one.

    \b
    Example:
      eascmd accesskey create --role readonly -d "dashboards"
      eascmd accesskey ls
      eascmd accesskey rm EAS0123456789ABCDEF0123
    """


@accesskey_command.command("create")
@click.option("--role", type=click.Choice(["admin", "readonly"]), default="admin", show_default=True)
@click.option("-d", "--description", default="", help="What the pair is for.")
@json_option
@pass_settings
def accesskey_create(settings: Settings, role: str, description: str, json_output: bool) -> None:
    """Create a pair; its secret is shown this once."""
    key = settings.client().create_access_key(role, description)
    if settings.wants_json(json_output):
        print_json(key)
        return
    echo(table.render_pairs([("AccessKeyId", key.get("AccessKeyId")), ("AccessKeySecret", key.get("AccessKeySecret")),
                             ("Role", key.get("Role")), ("Description", key.get("Description"))]))
    ok("AccessKey created: keep the secret now, it is not shown again")


@accesskey_command.command("ls")
@json_option
@pass_settings
def accesskey_ls(settings: Settings, json_output: bool) -> None:
    """List the pairs (ids and roles; never secrets)."""
    keys = settings.client().list_access_keys()
    if settings.wants_json(json_output):
        print_json(keys)
        return
    rows = [[k.get("AccessKeyId"), k.get("Role"), k.get("CreateTime") or "(eascmd.conf)", k.get("Description")]
            for k in keys]
    echo(table.render(rows, ["ACCESSKEYID", "ROLE", "CREATETIME", "DESCRIPTION"]))


@accesskey_command.command("rm")
@click.argument("access_key_id")
@yes_option
@pass_settings
def accesskey_rm(settings: Settings, access_key_id: str, yes: bool) -> None:
    """Revoke a pair: calls signed with it are refused from now on."""
    confirm(f"Are you sure to revoke the AccessKey [{access_key_id}]?", yes, f"[{access_key_id}] was not revoked")
    ok(str(settings.client().revoke_access_key(access_key_id).get("Message")))


for _command in (
    create_command, modify_command, start_command, stop_command, delete_command, dw_command,
    ls_command, desc_command, w_command, events_command, logs_command, upload_command, queue_command,
    *release.COMMANDS, *bml.COMMANDS,
):  # fmt: skip
    cli.add_command(_command)
# EAS's long names for the short ones.
for _alias, _command in (("list", ls_command), ("showworkers", w_command), ("deleteworkers", dw_command)):
    cli.add_command(_command, _alias)


def main() -> NoReturn:
    """Console script `eascmd`."""
    cli.main(prog_name="eascmd")
    raise SystemExit(0)  # not reached: EasGroup.main always exits
