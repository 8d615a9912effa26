"""`eascmd job ...` (batch prediction jobs) and `eascmd backflow ...` (data backflow)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from eascmd import table
from eascmd.common import Settings, confirm, echo, json_option, ok, pass_settings, print_json, yes_option


def _when(ts: Any) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


@click.group("job")
def job_command() -> None:
    """Batch prediction jobs: a deployed service run over a JSON-lines file, a CSV file or
    a folder of files; outputs next to the inputs.

    \b
    Example:
      job.json: {"Name": "nightly", "Service": "iris", "Input": "/data/items.jsonl",
                 "Schedule": {"Every": "day", "Start": 1767225600}}
      eascmd job create job.json
      eascmd job ls
      eascmd job desc nightly
      eascmd job stop nightly
      eascmd job delete nightly -y
    """


@job_command.command("create")
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_settings
def job_create(settings: Settings, job_file: str, json_output: bool) -> None:
    """Create a job from its JSON file: it starts at once, or at its schedule."""
    try:
        spec = json.loads(Path(job_file).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.ClickException(f"{job_file} is not JSON: {exc}") from None
    answer = settings.client().create_job(spec)
    if settings.wants_json(json_output):
        print_json(answer)
        return
    ok(f"Job [{answer.get('Name')}] created: {answer.get('State')}")


@job_command.command("ls")
@json_option
@pass_settings
def job_ls(settings: Settings, json_output: bool) -> None:
    """List jobs."""
    jobs = settings.client().list_jobs()
    if settings.wants_json(json_output):
        print_json(jobs)
        return
    rows = [[j.get("Name"), j.get("Service"), j.get("State"), j.get("Run"), _when(j.get("NextRun")),
             _when(j.get("CreateTime"))] for j in jobs]
    echo(table.render(rows, ["NAME", "SERVICE", "STATE", "RUN", "NEXTRUN", "CREATETIME"]))


@job_command.command("desc")
@click.argument("name")
@json_option
@pass_settings
def job_desc(settings: Settings, name: str, json_output: bool) -> None:
    """A job's state, progress and failed items."""
    job = settings.client().describe_job(name)
    if settings.wants_json(json_output):
        print_json(job)
        return
    echo(table.render_pairs([
        ("Name", job.get("Name")), ("Service", job.get("Service")), ("State", job.get("State")),
        ("Run", job.get("Run")), ("Progress", f"{job.get('Done')}/{job.get('Total')}"),
        ("Failed", job.get("Failed")), ("NextRun", _when(job.get("NextRun"))), ("Output", job.get("Output")),
        ("Message", job.get("Message")),
    ]))
    failures = job.get("Failures") or []
    if failures:
        echo(table.render([[f.get("Item"), f.get("Error")] for f in failures], ["ITEM", "ERROR"]))


@job_command.command("stop")
@click.argument("name")
@pass_settings
def job_stop(settings: Settings, name: str) -> None:
    """Stop a job (finished items stay recorded)."""
    ok(str(settings.client().stop_job(name).get("Message")))


@job_command.command("delete")
@click.argument("name")
@yes_option
@pass_settings
def job_delete(settings: Settings, name: str, yes: bool) -> None:
    """Delete a job and its item records (its output files stay)."""
    confirm(f"Are you sure to delete the job [{name}]?", yes, f"[{name}] was not deleted")
    ok(str(settings.client().delete_job(name).get("Message")))


@click.group("backflow")
def backflow_command() -> None:
    """Data backflow: the requests and answers a service captured (its `backflow` block).

    \b
    Example:
      eascmd backflow ls iris
      eascmd backflow get iris 42
      eascmd backflow export iris -o iris.jsonl
      eascmd backflow clear iris -y
    """


@backflow_command.command("ls")
@click.argument("service")
@click.option("--after", default=0, show_default=True, help="Only records after this id.")
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_settings
def backflow_ls(settings: Settings, service: str, after: int, limit: int, json_output: bool) -> None:
    """List captured records (oldest first)."""
    page = settings.client().backflow(service, after, limit)
    if settings.wants_json(json_output):
        print_json(page)
        return
    rows = [[r.get("id"), _when(r.get("time")), r.get("status"), r["request"].get("bytes"),
             r["answer"].get("bytes"), r.get("request_id")] for r in page.get("Records") or []]
    echo(table.render(rows, ["ID", "TIME", "STATUS", "REQUEST_BYTES", "ANSWER_BYTES", "REQUEST_ID"]))
    echo(f"{page.get('TotalCount')} records")


@backflow_command.command("get")
@click.argument("service")
@click.argument("record_id", type=int)
@pass_settings
def backflow_get(settings: Settings, service: str, record_id: int) -> None:
    """One record: request and answer."""
    print_json(settings.client().backflow_record(service, record_id))


@backflow_command.command("export")
@click.argument("service")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The JSON-lines file.")
@pass_settings
def backflow_export(settings: Settings, service: str, output: str) -> None:
    """Write every record as JSON lines, a dataset for labelling and retraining."""
    count = 0
    with open(output, "w", encoding="utf-8") as f:
        for record in settings.client().iter_backflow(service):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    ok(f"{count} records of [{service}] exported to {output}")


@backflow_command.command("clear")
@click.argument("service")
@yes_option
@pass_settings
def backflow_clear(settings: Settings, service: str, yes: bool) -> None:
    """Delete a service's captured records."""
    confirm(f"Are you sure to delete the backflow records of [{service}]?", yes, "nothing was deleted")
    ok(str(settings.client().clear_backflow(service).get("Message")))


COMMANDS = (job_command, backflow_command)
