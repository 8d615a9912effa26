"""eascmd against the real eas-server app, driven with click's CliRunner and as real subprocesses.

The server is `eas.server.compose(...)` served by uvicorn on 127.0.0.1 in a background
thread, its controller looping every 50 ms, over SQLite with MemoryBackend in place of
Ray Serve (the only stand-in, tests/support/backend.py). Statuses, counts, messages and
errors are the server's own. Where a test needs the steps of a deploy (progress lines),
MemoryBackend scripts them, each held until the test has read the line eascmd printed
for it, so no step can be skipped and nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from eas.client import config
from eascmd import table
from eascmd.cli import cli
from eascmd.common import eas_time
from eascmd.progress import ProgressPrinter
from eascmd.specfile import parse_defines
from tests.support.backend import ABSENT, Phase
from tests.support.platform import (  # noqa: F401 - the *_fixture names register the fixtures
    WAIT_S,
    Harness,
    conf_file_fixture,
    free_port,
    served_fixture,
)

ROOT = Path(__file__).resolve().parents[2]


#: Commands that wait for the server; the tests bound them (the default is 600 s).
WAITING_COMMANDS = {"create", "modify", "start", "stop", "delete"}


def run(conf: str, *args: str, input: str | None = None) -> Result:
    """eascmd in-process; a waiting command gets a bounded --timeout unless it names one."""
    if args and args[0] in WAITING_COMMANDS and "--timeout" not in args:
        args = (*args, "--timeout", str(WAIT_S))
    return CliRunner().invoke(cli, ["-c", conf, *args], input=input)


def write_spec(tmp_path: Path, spec: dict, name: str = "svc.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(spec, indent=2))
    return str(path)


def spec(name: str, instance: int = 1, **extra: Any) -> dict[str, Any]:
    """A service MemoryBackend deploys (no model_path: the controller has nothing to fetch)."""
    return {"name": name, "processor": "sklearn", "metadata": {"instance": instance}, **extra}


def config_of(served: Harness, name: str) -> dict[str, Any]:
    """The service JSON the server stored (with defaults), from describe's ServiceConfig."""
    return json.loads(served.describe(name)["ServiceConfig"])


def event_types(served: Harness, name: str) -> list[str]:
    """The kinds of change (EAS's Reason) of a service's events, newest first."""
    return [e["Reason"] for e in served.ok("GET", served.svc(name, "/events"))["Events"]]


# -- pure helpers -----------------------------------------------------------------------


def test_parse_defines_nests_merges_and_parses_json() -> None:
    assert parse_defines(
        ["metadata.instance=2", "metadata.cpu=4", "metadata.rpc.batching=true", "processor=sklearn",
         "metadata.rpc.keepalive=5000", 'autoscaler={"min": 1, "max": 3}', "model_config=a=b", "name=01x"]
    ) == {
        "metadata": {"instance": 2, "cpu": 4, "rpc": {"batching": True, "keepalive": 5000}},
        "processor": "sklearn",
        "autoscaler": {"min": 1, "max": 3},
        "model_config": "a=b",
        "name": "01x",
    }  # fmt: skip
    assert parse_defines(["a.b=1", 'a={"c": 2}']) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize("bad", [["metadata.instance"], ["=3"], ["a..b=1"], ["a=1", "a.b=2"], ["a.b=2", "a=1"]])
def test_parse_defines_rejects_bad_input(bad: list[str]) -> None:
    with pytest.raises(click.BadParameter):
        parse_defines(bad)


def test_table_render() -> None:
    assert table.render([["iris", 1], ["a-longer-name", None]], ["NAME", "N"]) == (
        "+---------------+---+\n"
        "| NAME          | N |\n"
        "+---------------+---+\n"
        "| iris          | 1 |\n"
        "| a-longer-name |   |\n"
        "+---------------+---+"
    )
    assert table.render_pairs([("Status", "Running"), ("ServiceConfig", '{\n  "a": 1\n}')]) == (
        "+---------------+----------+\n"
        "|        Status | Running  |\n"
        "| ServiceConfig | {        |\n"
        '|               |   "a": 1 |\n'
        "|               | }        |\n"
        "+---------------+----------+"
    )
    assert table.render([["模型", "x"]], ["AB", "C"]).splitlines()[3] == "| 模型 | x |"
    assert table.render([], ["A", "B"]) == "+---+---+\n| A | B |\n+---+---+\n+---+---+"


def test_progress_printer_prints_on_change_and_heartbeat() -> None:
    lines: list[str] = []
    now = [0.0]
    printer = ProgressPrinter(lines.append, heartbeat_s=5, clock=lambda: now[0])
    waiting = {"Status": "Waiting", "TotalInstance": 1, "PendingInstance": 1, "RunningInstance": 0}
    printer(waiting)
    now[0] = 1
    printer(waiting)
    now[0] = 6
    printer(waiting)
    printer({**waiting, "Message": "pulling", "PendingInstance": 0, "RunningInstance": 1, "Status": "Running"})
    assert lines == [
        "[OK] Waiting [Total: 1, Pending: 1, Running: 0]",
        "[OK] Waiting [Total: 1, Pending: 1, Running: 0]",
        "[OK] pulling",
        "[OK] Running [Total: 1, Pending: 0, Running: 1]",
    ]


def test_every_command_has_help_with_an_example() -> None:
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output and f"eascmd {name}" in result.output, name
        assert command.get_short_help_str(limit=80).strip(), name


# -- commands ---------------------------------------------------------------------------


def test_config_writes_a_readable_file(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "eascmd.conf")
    result = run(path, "config", "-i", "me", "-k", "key", "-e", "http://10.0.0.1:9000/", "-r", "bj")
    assert result.exit_code == 0, result.output
    assert result.output == f"Configuration saved to: {path}\n", "EAS's line"
    assert config.read(path) == config.ClientConfig("http://10.0.0.1:9000", "me", "key", "bj")
    run(path, "config", "-i", "me2", "-k", "key2")  # endpoint and region are kept
    assert config.read(path) == config.ClientConfig("http://10.0.0.1:9000", "me2", "key2", "bj")
    bare = run(path, "config", "-i", "me", "-k", "key", "-e", "eas.example.com:8080")  # EAS takes a bare host
    assert bare.exit_code == 0 and config.read(path).endpoint == "http://eas.example.com:8080"
    bad = run(path, "config", "-i", "me", "-k", "key", "-e", "ftp://host")
    assert bad.exit_code == 2 and "[ERROR]" in bad.stderr and "is not a server address" in bad.stderr


#: The deploy eascmd watches in the progress test, each step held until its line is read.
PROGRESS_STEPS = [
    Phase(ABSENT, hold=True, step="accepted"),  # Serve does not list the app yet: Creating
    Phase("DEPLOYING", running=0, hold=True, step="starting"),
    Phase("DEPLOYING", running=1, hold=True, step="one-up"),
    Phase("DEPLOYING", hold=True, step="all-up"),  # both replicas up, the app not yet RUNNING
]


def run_watched(conf: str, args: list[str], release: dict[str, tuple[str, str]], served: Harness) -> tuple[
        int, list[str], str]:
    """Run eascmd as a real process; when it prints a line of `release`, leave that
    (service, step) of the scripted deploy. Returns (exit code, stdout lines, stderr)."""
    env = {**os.environ, "EASCMD_CONFIG": conf, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "eascmd", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, name="eascmd-stdout", daemon=True)
    reader.start()
    out: list[str] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            out.append(line)
            if line in release:
                served.cluster.release(*release[line], timeout=WAIT_S)
        code = proc.wait(timeout=WAIT_S)
        assert proc.stderr is not None
        return code, out, proc.stderr.read()
    except queue.Empty:
        raise AssertionError(f"eascmd printed nothing new for {WAIT_S} s; so far: {out}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


def test_create_streams_progress_until_running(conf_file: str, served: Harness, tmp_path: Path) -> None:
    served.cluster.script = lambda name, s: PROGRESS_STEPS
    path = write_spec(tmp_path, spec("iris", 2, token="tok12345678"))
    release = {
        "[OK] Waiting [Total: 2, Pending: 0, Running: 0]": ("iris", "accepted"),
        "[OK] Waiting [Total: 2, Pending: 2, Running: 0]": ("iris", "starting"),
        "[OK] Waiting [Total: 2, Pending: 1, Running: 1]": ("iris", "one-up"),
        "[OK] Waiting [Total: 2, Pending: 0, Running: 2]": ("iris", "all-up"),
    }
    code, lines, stderr = run_watched(conf_file, ["create", path, "--timeout", str(WAIT_S)], release, served)
    assert code == 0, stderr
    assert lines[0].startswith("[RequestId]: ") and len(lines[0]) > len("[RequestId]: ")
    assert f"| Intranet Endpoint | {served.url}/api/predict/iris |" in lines
    assert any(line.startswith("|             Token | tok12345678 ") for line in lines)
    progress = lines[lines.index("[OK] Creating service") + 1 :]
    # Each step is held until its line is read, so eascmd polled every step; each line
    # is printed once however many polls saw it.
    assert progress == [*release, "[OK] Running [Total: 2, Pending: 0, Running: 2]", "[OK] Service is running"]


def test_create_yaml(conf_file: str, served: Harness, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("name: iris\nprocessor: sklearn\nmetadata:\n  instance: 1\n")
    result = run(conf_file, "create", str(path))
    assert result.exit_code == 0, result.output
    stored = config_of(served, "iris")
    assert (stored["name"], stored["processor"], stored["metadata"]["instance"]) == ("iris", "sklearn", 1)
    assert served.status("iris") == "Running"


def test_create_failed_exits_1_with_reason(conf_file: str, tmp_path: Path) -> None:
    """A model the server cannot fetch: the controller fails it, eascmd shows its reason."""
    missing = tmp_path / "missing.joblib"
    result = run(conf_file, "create", write_spec(tmp_path, spec("bad", model_path=str(missing))))
    assert result.exit_code == 1
    assert f"[FAIL] Service failed: {missing} does not exist on the server" in result.stderr
    assert "[ERROR] see 'eascmd events bad'" in result.stderr
    assert "[OK] Service is running" not in result.output and "Traceback" not in result.output


def test_create_existing_asks_before_updating(conf_file: str, served: Harness, tmp_path: Path) -> None:
    served.running(spec("iris"))
    path = write_spec(tmp_path, spec("iris", metadata={"instance": 1, "cpu": 2}))
    refused = run(conf_file, "create", path, input="n\n")
    assert refused.exit_code == 1 and "Service [iris] already exists in [local]" in refused.output
    assert "[ERROR] cancelled: service [iris] was not changed" in refused.stderr
    assert config_of(served, "iris")["metadata"]["cpu"] == 1 and "Updated" not in event_types(served, "iris")
    accepted = run(conf_file, "create", path, "-y")
    assert accepted.exit_code == 0, accepted.output
    assert "[OK] Updating service" in accepted.output and config_of(served, "iris")["metadata"]["cpu"] == 2
    assert accepted.output.rstrip().endswith("[OK] Service is running")


def test_create_timeout(conf_file: str, served: Harness, tmp_path: Path) -> None:
    served.cluster.script = lambda name, s: [Phase("DEPLOYING", running=0, hold=True, step="never")]
    result = run(conf_file, "create", write_spec(tmp_path, spec("slow")), "--timeout", "0")
    assert result.exit_code == 1
    assert "[ERROR] service slow is not Running or Sleeping after 0 s" in result.stderr
    assert "eascmd desc slow" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{\n  "name": "iris",\n}\n',
            "is not valid JSON: Expecting property name enclosed in double quotes at line 3, column 1",
        ),
        ("[1, 2]", "must hold an object"),
        ("", "is empty"),
    ],
)
def test_bad_json_file(conf_file: str, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "svc.json"
    path.write_text(content)
    result = run(conf_file, "create", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"[ERROR] {path} ") and expected in result.stderr
    assert "Traceback" not in result.output


def test_bad_yaml_and_missing_file(conf_file: str, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("name: iris\nmetadata: [1,\n")
    result = run(conf_file, "create", str(path))
    assert result.exit_code == 1 and "is not valid YAML" in result.stderr and "line 3" in result.stderr
    missing = run(conf_file, "create", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "[ERROR] no such file:" in missing.stderr


def test_delete_confirmation(conf_file: str, served: Harness) -> None:
    served.running(spec("iris"))
    refused = run(conf_file, "delete", "iris", input="n\n")
    assert refused.exit_code == 1
    assert "Are you sure to delete the service [iris] in [local]? [Y/n]" in refused.output
    assert "[ERROR] cancelled: service [iris] was not deleted" in refused.stderr
    assert served.status("iris") == "Running"

    accepted = run(conf_file, "delete", "iris", input="Y\n")
    assert accepted.exit_code == 0, accepted.output
    lines = accepted.output.splitlines()
    assert lines[1].startswith("[RequestId]: ") and lines[2] == "[OK] Service [iris] in region [local] is terminating"
    assert "[OK] Service is terminating" in lines and lines[-1] == "[OK] Service was deleted successfully"
    assert served.status("iris") is None

    served.running(spec("iris2"))
    default = run(conf_file, "delete", "iris2", input="\n")  # Enter takes the default: yes
    assert default.exit_code == 0 and served.status("iris2") is None

    served.running(spec("iris3"))
    forced = run(conf_file, "delete", "iris3", "-y")
    assert forced.exit_code == 0 and "Are you sure" not in forced.output
    assert "[OK] Service was deleted successfully" in forced.output
    assert [c[:2] for c in served.cluster.calls if c[0] == "delete"] == [
        ("delete", "iris"), ("delete", "iris2"), ("delete", "iris3")]


def test_modify_with_defines_and_file(conf_file: str, served: Harness, tmp_path: Path) -> None:
    served.running(spec("iris"))
    result = run(conf_file, "modify", "iris", "-Dmetadata.instance=2", "-Dmetadata.rpc.batching=true")
    assert result.exit_code == 0, result.output
    stored = config_of(served, "iris")
    assert (stored["metadata"]["instance"], stored["metadata"]["rpc"]["batching"]) == (2, True)
    assert stored["processor"] == "sklearn", "the change was merged into the service"
    assert "[OK] Service [iris] is updating" in result.output
    assert result.output.splitlines()[-2:] == ["[OK] Running [Total: 2, Pending: 0, Running: 2]",
                                               "[OK] Service is running"]

    patch = write_spec(tmp_path, {"metadata": {"cpu": 2, "instance": 5}}, "patch.json")
    result = run(conf_file, "modify", "iris", "-s", patch, "-Dmetadata.instance=1")
    assert result.exit_code == 0, result.output
    stored = config_of(served, "iris")
    assert (stored["metadata"]["cpu"], stored["metadata"]["instance"]) == (2, 1), "-D applies on top of -s"

    served.ok("PUT", served.svc("iris", "/stop"))
    served.wait_status("iris", {"Stopped"})
    stopped = run(conf_file, "modify", "iris", "-Dmetadata.cpu=3", "--timeout", "0")
    assert stopped.exit_code == 0, stopped.output
    assert "[OK] Service [iris] is stopped: the change applies when it starts" in stopped.output
    assert "Waiting" not in stopped.output and config_of(served, "iris")["metadata"]["cpu"] == 3
    assert served.status("iris") == "Stopped"

    nothing = run(conf_file, "modify", "iris")
    assert nothing.exit_code == 2 and "[ERROR] nothing to change" in nothing.stderr
    bad = run(conf_file, "modify", "iris", "-Dmetadata.instance")
    assert bad.exit_code == 2 and "is not key.path=value" in bad.stderr
    invalid = run(conf_file, "modify", "iris", "-Dmetadata.instance=-1")
    assert invalid.exit_code == 1 and "[ERROR] metadata.instance: " in invalid.stderr


def test_stop_and_start(conf_file: str, served: Harness) -> None:
    served.running(spec("iris"))
    stopped = run(conf_file, "stop", "iris")
    assert stopped.exit_code == 0, stopped.output
    assert "[OK] Service [iris] is stopping" in stopped.output and "[OK] Service [iris] is stopped" in stopped.output
    assert served.status("iris") == "Stopped"
    started = run(conf_file, "start", "iris")
    assert started.exit_code == 0, started.output
    assert "[OK] Service [iris] is starting" in started.output
    assert started.output.rstrip().endswith("[OK] Service is running")


def test_read_commands_tables_and_json(conf_file: str, served: Harness) -> None:
    served.running(spec("iris", 2, token="token-iris"))
    for name in ("ls", "list"):  # EAS's long name too
        ls = run(conf_file, name)
        assert ls.exit_code == 0, ls.output
        assert ls.output.splitlines()[0].startswith("[RequestId]: ")
        assert ls.output.splitlines()[2].split() == [
            "|", "SERVICENAME", "|", "REGION", "|", "INSTANCE", "|", "CREATETIME", "|", "UPDATETIME", "|",
            "STATUS", "|", "WEIGHT", "|", "SERVICEPATH", "|",
        ]  # fmt: skip
    listed = json.loads(run(conf_file, "ls", "--json").output)
    assert listed[0]["ServiceName"] == "iris"
    created, updated = eas_time(listed[0]["CreateTime"]), eas_time(listed[0]["UpdateTime"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created), "EAS's times in tables"
    assert ls.output.splitlines()[4].split("|")[1:-1] == [
        " iris        ", " local  ", " 2        ", f" {created} ", f" {updated} ", " Running ", " 100    ",
        " /api/predict/iris ",
    ]  # fmt: skip
    assert json.loads(CliRunner().invoke(cli, ["-c", conf_file, "--json", "ls"]).output)[0]["Region"] == "local"

    desc = run(conf_file, "desc", "iris")
    assert desc.exit_code == 0, desc.output
    keys = [line.split("|")[1].strip() for line in desc.output.splitlines() if line.startswith("|")]
    assert [k for k in keys if k] == [
        "Status", "ServiceName", "Region", "CreateTime", "UpdateTime", "AccessToken", "TotalInstance",
        "RunningInstance", "PendingInstance", "DesiredInstance", "CPU", "GPU", "Memory", "Weight", "LatestVersion",
        "CurrentVersion", "LastScaling", "Message",
        "IntranetEndpoint", "ServiceConfig",
    ]  # fmt: skip
    assert f"| {served.url}/api/predict/iris" in desc.output
    assert "|           Memory | 0M " in desc.output, "EAS writes memory in MB with an M"
    assert '|                  |   "name": "iris",' in desc.output  # pretty ServiceConfig, one line per row
    assert json.loads(run(conf_file, "desc", "iris", "--json").output)["AccessToken"] == "token-iris"

    for name in ("w", "showworkers"):
        w = run(conf_file, name, "iris")
        assert w.exit_code == 0, w.output
        assert w.output.splitlines()[2].split("|")[1:-1] == [
            " INSTANCENAME ", " INNERIP   ", " HOSTIP    ", " STARTAT             ", " RESTARTS ", " STATUS  ",
            " READY ", " REASON ", " LASTSTATE ",
        ]  # fmt: skip
    instances = json.loads(run(conf_file, "w", "iris", "--json").output)
    assert [i["InstanceName"] for i in instances] == ["iris-r0", "iris-r1"]
    started = eas_time(instances[1]["StartAt"])
    assert f"| iris-r1      | 127.0.0.1 | 127.0.0.1 | {started} | 0        | Running | [1/1] |" in w.output

    events = run(conf_file, "events", "iris")
    assert events.exit_code == 0 and "| Normal | Created | service created " in events.output
    assert events.output.splitlines()[3].split("|")[3].strip() == "Created", "oldest first, like a log"
    assert "TIME" in events.output and "REASON" in events.output and "MESSAGE" in events.output
    assert json.loads(run(conf_file, "events", "iris", "--json").output)[-1]["Reason"] == "Created"

    served.cluster.logs[("iris", "r1")] = ["loading model", "ERROR: boom"]
    logs = run(conf_file, "logs", "iris", "-i", "iris-r1")
    assert logs.exit_code == 0 and logs.output == "loading model\nERROR: boom\n"
    assert run(conf_file, "logs", "iris", "-k", "boom").output == "[iris-r1] ERROR: boom\n"
    assert json.loads(run(conf_file, "logs", "iris", "-i", "iris-r1", "-n", "1", "--json").output)["Logs"] == [
        "ERROR: boom"]


def test_dw_restarts_after_confirmation(conf_file: str, served: Harness) -> None:
    served.running(spec("iris", 2))
    restarted = lambda: [c[1] for c in served.cluster.calls if c[0] == "restart"]  # noqa: E731
    refused = run(conf_file, "dw", "iris", "iris-r0", input="n\n")
    assert refused.exit_code == 1 and restarted() == []
    result = run(conf_file, "dw", "iris", "iris-r0", "iris-r1", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Are you sure to delete the instances [iris-r0,iris-r1] of service [iris] in [local]? [Y/n]" in result.output
    assert ("[OK] Instance(s) [iris-r0,iris-r1] for service [iris] in region [local] was deleted successfully"
            in result.output)
    assert restarted() == ["iris-r0", "iris-r1"]
    commas = run(conf_file, "deleteworkers", "iris", "iris-r1,iris-r0", "-y")  # EAS's form
    assert commas.exit_code == 0, commas.output
    assert restarted() == ["iris-r0", "iris-r1", "iris-r1", "iris-r0"]
    unknown = run(conf_file, "dw", "iris", "iris-r7", "-y")
    assert unknown.exit_code == 1 and "[ERROR] no such instance of 'iris': iris-r7" in unknown.stderr


def test_autoscale_and_cronscale_in_eas_syntax(conf_file: str, served: Harness, tmp_path: Path) -> None:
    served.running(spec("iris"))
    result = run(conf_file, "autoscale", "local/iris", "-Dmin=1", "-Dmax=4", "-Dstrategies.qps=20",
                 "-Dstrategies.cpu=70", "-Dbehavior.scaleDown.stabilizationWindowSeconds=60")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "[OK] Autoscaler of service [iris]: 1..4 instances on qps 20, cpu 70"
    block = config_of(served, "iris")["autoscaler"]
    assert (block["min"], block["max"], block["behavior"]["scaleDown"]["stabilizationWindowSeconds"]) == (1, 4, 60)
    assert [(s["metricName"], s["threshold"]) for s in block["scaleStrategies"]] == [("qps", 20), ("cpu", 70)]
    shown = run(conf_file, "autoscale", "desc", "iris")
    assert "|      MaxReplica | 4 " in shown.output and "qps 20, cpu 70" in shown.output
    assert json.loads(run(conf_file, "autoscale", "iris", "--json").output)["MinReplica"] == 1
    for args, words in [(["iris", "-Dmax=3"], "at least one -Dstrategies"),
                        (["iris", "-Dmaxx=3"], "unknown key(s) maxx"),
                        (["elsewhere/iris", "-Dmax=2", "-Dstrategies.qps=1"], "region 'elsewhere'")]:
        bad = run(conf_file, "autoscale", *args)
        assert bad.exit_code == 2 and words in bad.stderr, bad.stderr
    removed = run(conf_file, "autoscale", "rm", "iris")
    assert removed.exit_code == 0 and "[OK] Autoscaler of service [iris] is removed" in removed.output
    assert "autoscaler" not in config_of(served, "iris")

    cron = write_spec(tmp_path, {"ScaleJobs": [{"Name": "day", "Schedule": "0 0 8 * * *", "TargetSize": 1}],
                                 "ExcludeDates": ["* * * * * 0,6"], "TimeZone": "Asia/Shanghai"}, "cron.json")
    set_ = run(conf_file, "cronscale", "iris", "-s", cron)
    assert set_.exit_code == 0 and "[OK] Cron scaler of service [iris]: 1 jobs" in set_.output, set_.output
    assert config_of(served, "iris")["cron_scaler"]["jobs"] == [{"name": "day", "schedule": "0 8 * * *", "target": 1}]
    shown = run(conf_file, "cronscale", "desc", "iris")
    assert "| day  | 0 0 8 * * * | 1          |" in shown.output and "ExcludeDates: * * * * * 0,6" in shown.output
    assert run(conf_file, "cronscale", "rm", "iris").exit_code == 0
    assert "cron_scaler" not in config_of(served, "iris")


def test_not_found_says_what_to_do(conf_file: str) -> None:
    result = run(conf_file, "desc", "nope")
    assert result.exit_code == 1
    assert result.stderr.startswith("[ERROR] service 'nope' does not exist") and "eascmd ls" in result.stderr


def test_unreachable_server_message(tmp_path: Path) -> None:
    path = str(tmp_path / "eascmd.conf")
    url = f"http://127.0.0.1:{free_port()}"
    config.write(path, config.ClientConfig(url, "a", "b"))
    result = run(path, "ls")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"[ERROR] the EAS server at {url} is not reachable")
    assert "check it is running" in result.stderr and "Traceback" not in result.output


def test_wrong_credentials_message(served: Harness, tmp_path: Path) -> None:
    path = served.conf(tmp_path / "eascmd.conf", access_key="wrong-key")
    result = run(path, "ls")
    assert result.exit_code == 1
    assert "[HTTP 401, SignatureDoesNotMatch" in result.stderr and "check the AccessKey secret" in result.stderr
    assert f"check {path}" in result.stderr and "eascmd config -i" in result.stderr


def test_missing_config_and_usage_errors(tmp_path: Path) -> None:
    result = run(str(tmp_path / "none.conf"), "ls")
    assert result.exit_code == 1 and result.stderr.startswith("[ERROR] no eascmd config at")
    unknown = CliRunner().invoke(cli, ["frobnicate"])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("[ERROR] No such command 'frobnicate'")
    assert "eascmd --help" in unknown.stderr


def test_real_subprocess(conf_file: str, served: Harness) -> None:
    served.running(spec("iris"))
    env = {**os.environ, "EASCMD_CONFIG": conf_file}
    ok = subprocess.run(
        [sys.executable, "-m", "eascmd", "ls", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["ServiceName"] == "iris"
    failed = subprocess.run(
        [sys.executable, "-m", "eascmd", "desc", "nope"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("[ERROR] service 'nope' does not exist") and "Traceback" not in failed.stderr
