"""Batch prediction jobs (BML 批量预测): a deployed service run over a dataset.

A job names a service and an input: a JSON-lines file (one request body a line), a CSV
file (one `{"include_req": false, "data": [{column: value}]}` request a row, BML's
tabular API) or a folder of files (images: each file's bytes one request). Outputs go
next to the inputs' names: `<file>.out.jsonl` (one `{"index", "status", "output"}` a
line, in input order) for a file, `<folder>_output/<name>.json` for a folder. Each
item is recorded in the store as it finishes, so a job cut short (eas-server killed)
resumes where it stopped on the next start, without redoing finished items; failures
are listed per item. Scheduled jobs (`Every`: minute, hour, day, week, month from
`Start`) run again at each period, each run a fresh pass over the input.

Requests go to the server's own gateway over HTTP with the service's token: a job
calls the service exactly as a client would, so its rate limit, batching and
instances count it. Only the leader's runner works (one runner per store).
"""

from __future__ import annotations

import base64
import calendar
import csv
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from eas.sources import objectstore
from eas.control.routing import bml_mode
from eas.control.store import Desired, NotFound, Status, Store

log = logging.getLogger("eas.jobs")

PENDING, RUNNING, SCHEDULED, SUCCEEDED, FAILED, STOPPED = (
    "Pending", "Running", "Scheduled", "Succeeded", "Failed", "Stopped")
PERIODS = ("minute", "hour", "day", "week", "month")
FORMATS = ("jsonl", "csv", "folder")
CHUNK = 32
"""Items recorded per store transaction (and the most a kill can make run again: none,
since only recorded items count as done)."""
TICK_S = 0.5
UNREADY = (0, 502, 503, 504)
"""Answers that mean the service is not ready (or is gone for a moment): retried."""
READY_WAIT_S = 300.0
"""How long a run waits for its service to answer before items fail."""


class JobError(ValueError):
    """A job spec that cannot run (400 at the API)."""


@dataclass(frozen=True)
class Item:
    key: str
    index: int
    body: bytes
    content_type: str


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The job spec, checked and completed: Name, Service, Input, Format, Concurrency, Schedule."""
    if not isinstance(spec, dict):
        raise JobError("a job is a JSON object")
    unknown = set(spec) - {"Name", "Service", "ServiceConfig", "Input", "Format", "Concurrency", "Schedule",
                           "Timeout"}
    if unknown:
        raise JobError(f"unknown job fields: {', '.join(sorted(unknown))}")
    name = spec.get("Name")
    if not isinstance(name, str) or not name or len(name) > 63 or not all(c.isalnum() or c in "_-" for c in name):
        raise JobError("Name: 1-63 letters, digits, '_' or '-'")
    config = spec.get("ServiceConfig")
    if config is not None:
        if "Service" in spec:
            raise JobError("give Service (a deployed service) or ServiceConfig (a service JSON the job deploys), "
                           "not both")
        if not isinstance(config, dict):
            raise JobError("ServiceConfig: a service JSON object")
    elif not isinstance(spec.get("Service"), str) or not spec["Service"]:
        raise JobError("Service: the deployed service the job calls (or ServiceConfig: a service JSON the job "
                       "deploys while it runs and removes when done)")
    source = spec.get("Input")
    if not isinstance(source, str) or not source:
        raise JobError("Input: a local JSON-lines or CSV file, or a folder")
    if is_remote(source):
        try:
            url = objectstore.parse(source)
        except objectstore.ObjectStoreError as exc:
            raise JobError(f"Input: {exc}") from None
        is_dir, suffix = url.is_prefix, Path(url.key).suffix.lower()
    else:
        path = Path(source)
        if not path.exists():
            raise JobError(f"Input {source} does not exist")
        source, is_dir, suffix = str(path.resolve()), path.is_dir(), path.suffix.lower()
    fmt = spec.get("Format") or ("folder" if is_dir else "csv" if suffix == ".csv" else "jsonl")
    if fmt not in FORMATS:
        raise JobError(f"Format: one of {', '.join(FORMATS)}")
    concurrency = spec.get("Concurrency", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
        raise JobError("Concurrency: 1..64 requests at once")
    schedule = spec.get("Schedule")
    if schedule is not None:
        if not isinstance(schedule, dict) or schedule.get("Every") not in PERIODS:
            raise JobError(f"Schedule: {{\"Every\": {' | '.join(PERIODS)}, \"Start\": epoch seconds}}")
        start = schedule.get("Start", time.time())
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise JobError("Schedule.Start: epoch seconds")
        schedule = {"Every": schedule["Every"], "Start": float(start)}
    return {"Name": name, "Service": spec.get("Service") or owned_service_name(name), "Input": source,
            "Format": fmt, "OwnsService": config is not None,
            "Concurrency": concurrency, "Schedule": schedule, "Timeout": float(spec.get("Timeout", 60))}


def owned_service_name(job: str) -> str:
    """The service a job with a ServiceConfig deploys, unless the JSON names one."""
    return "job_" + "".join(c if c.isalnum() else "_" for c in job.lower())[:58]


def next_time(schedule: dict[str, Any], after: float) -> float:
    """The first planned time of a schedule strictly after `after`."""
    start, every = schedule["Start"], schedule["Every"]
    if start > after:
        return start
    if every == "month":
        moment = datetime.fromtimestamp(start, timezone.utc)
        months = 0
        while True:
            months += 1
            year, month = moment.year + (moment.month - 1 + months) // 12, (moment.month - 1 + months) % 12 + 1
            day = min(moment.day, calendar.monthrange(year, month)[1])
            at = moment.replace(year=year, month=month, day=day).timestamp()
            if at > after:
                return at
    step = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}[every]
    return start + (int((after - start) // step) + 1) * step


def items(spec: dict[str, Any], bml: bool = False) -> Iterator[Item]:
    """The requests a job's input holds, in order. A folder's files go as their bytes,
    or as BML's image request `{"image": "<base64>"}` to a service in BML mode."""
    path = Path(spec["Input"])
    if spec["Format"] == "folder":
        for i, file in enumerate(sorted(p for p in path.iterdir() if p.is_file())):
            if bml:
                body = json.dumps({"image": base64.b64encode(file.read_bytes()).decode()}).encode()
                yield Item(file.name, i, body, "application/json")
            else:
                yield Item(file.name, i, file.read_bytes(), "application/octet-stream")
    elif spec["Format"] == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f)):
                data = {k: _number(v) for k, v in row.items()}
                yield Item(str(i), i, json.dumps({"include_req": False, "data": [data]}).encode(), "application/json")
    else:
        with path.open("rb") as f:
            index = 0
            for line in f:
                if line.strip():
                    yield Item(str(index), index, line.strip(), "application/json")
                    index += 1


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def count(spec: dict[str, Any]) -> int:
    return sum(1 for _ in items(spec))


def is_remote(source: str) -> bool:
    """An object-storage input (oss://, s3://): copied to the server's disk for each run."""
    return source.split("://", 1)[0].lower() in objectstore.SCHEMES and "://" in source


def remote_output(spec: dict[str, Any]) -> str:
    """Where a remote input's outputs go: next to it, as for a local one."""
    source = spec["Input"]
    if spec["Format"] == "folder":
        return source.rstrip("/") + "_output/"
    return source + ".out.jsonl"


def output_path(spec: dict[str, Any]) -> Path:
    path = Path(spec["Input"])
    if spec["Format"] == "folder":
        return path.parent / f"{path.name}_output"
    return path.parent / f"{path.name}.out.jsonl"


class JobRunner:
    """Runs due jobs one at a time on its own thread; resumable from the store."""

    def __init__(self, store: Store, endpoint: str, leading: Callable[[], bool] = lambda: True,
                 reconcile: Callable[[str], None] = lambda name: None, work_dir: Path | None = None) -> None:
        self.store, self.endpoint, self.leading = store, endpoint.rstrip("/"), leading
        self.work_dir = work_dir or Path.cwd() / "jobs"
        """Where object-storage inputs are copied and their outputs made before upload."""
        self.reconcile = reconcile
        """Tells the controller a service's desired state changed (a job's own service)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eas-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if not self.leading():
                continue
            try:
                self.tick()
            except Exception:
                log.exception("batch jobs: a pass failed")

    def tick(self) -> None:
        now = time.time()
        for job in self.store.jobs():
            if self._stop.is_set():
                return
            state = job["state"]
            if state == SCHEDULED and job["next_run"] is not None and job["next_run"] <= now:
                self.store.update_job(job["name"], state=RUNNING, run=job["run"] + 1, message="", total=None)
                job = self.store.job(job["name"])
                state = RUNNING
                self._own_service(job, Desired.RUNNING)
            elif state == PENDING:
                self.store.update_job(job["name"], state=RUNNING, run=max(1, job["run"]), message="", total=None)
                job = self.store.job(job["name"])
                state = RUNNING
                self._own_service(job, Desired.RUNNING)
            if state == RUNNING:
                self._run(job)

    def _own_service(self, job: dict[str, Any], desired: Desired) -> None:
        """A job's own service (ServiceConfig) runs only while the job does: started for a
        run, stopped between scheduled runs, deleted when the job is done."""
        if not job["spec"].get("OwnsService"):
            return
        name = job["spec"]["Service"]
        try:
            rec = self.store.get(name)
        except NotFound:
            return
        if rec.desired in (desired, Desired.DELETED):
            return
        status = {Desired.RUNNING: Status.CREATING, Desired.STOPPED: Status.STOPPING,
                  Desired.DELETED: Status.DELETING}[desired]
        self.store.set_desired(name, desired, f"batch job '{job['name']}': {desired.lower()}")
        self.store.set_status(name, status, "")
        self.reconcile(name)

    def _still_running(self, name: str) -> bool:
        try:
            return self.store.job(name)["state"] == RUNNING and not self._stop.is_set()
        except NotFound:
            return False

    def _run(self, job: dict[str, Any]) -> None:
        spec, name, run = job["spec"], job["name"], job["run"]
        try:
            service = self.store.get(spec["Service"])
        except NotFound:
            self.store.update_job(name, state=FAILED, message=f"service '{spec['Service']}' does not exist")
            return
        token, bml = service.token, bml_mode(service.spec)
        if is_remote(spec["Input"]):
            try:
                spec = {**spec, "Input": str(self._copy_input(job))}
            except (objectstore.ObjectStoreError, OSError) as exc:
                self.store.update_job(name, state=FAILED, message=f"reading {spec['Input']}: {exc}")
                self._own_service(job, Desired.STOPPED if spec.get("Schedule") else Desired.DELETED)
                return
        if job["total"] is None:
            self.store.update_job(name, total=count(spec))
        done = self.store.job_items(name, run)
        out = output_path(spec)
        if spec["Format"] == "folder":
            out.mkdir(exist_ok=True)
        part = out.with_name(out.name + ".part")
        url = f"{self.endpoint}/api/predict/{spec['Service']}"
        with httpx.Client(timeout=spec["Timeout"], trust_env=False) as client, \
                ThreadPoolExecutor(spec["Concurrency"], thread_name_prefix=f"job-{name}") as pool:
            def call(item: Item) -> tuple[Item, int, bytes]:
                try:
                    r = client.post(url, content=item.body, headers={"Authorization": token,
                                                                     "Content-Type": item.content_type})
                    return item, r.status_code, r.content
                except httpx.HTTPError as exc:
                    return item, 0, f"{type(exc).__name__}: {exc}".encode()

            source = (i for i in items(spec, bml) if i.key not in done)
            retry: list[Item] = []
            waited_since: float | None = None
            while True:
                pending = retry + [i for _, i in zip(range(CHUNK - len(retry)), source)]
                if not pending:
                    break
                if not self._still_running(name):
                    return
                results = list(pool.map(call, pending))
                # A service not ready yet (just restarted, waking) is waited for, not a failure.
                unready = [r for r in results if r[1] in UNREADY]
                retry = [r[0] for r in unready]
                if unready and len(unready) == len(results):
                    waited_since = waited_since or time.monotonic()
                    if time.monotonic() - waited_since < READY_WAIT_S:
                        self._stop.wait(1.0)
                        continue
                    retry = []
                else:
                    waited_since = None
                    results = [r for r in results if r[1] not in UNREADY] if retry else results
                self._write(spec, out, part, results)
                self.store.finish_items(name, run, [(i.key, 200 <= s < 300, "" if 200 <= s < 300 else
                                                     f"{s}: {b[:300].decode('utf-8', 'replace')}")
                                                    for i, s, b in results])
        self._finish(job, out, part)

    def _copy_input(self, job: dict[str, Any]) -> Path:
        """An object-storage input on this server's disk, once per run (a resumed run
        reuses its copy)."""
        url = objectstore.parse(job["spec"]["Input"])
        base = self.work_dir / job["name"] / f"run{job['run']}"
        local = base / (Path(url.key.rstrip("/")).name or url.bucket)
        if (base / ".complete").exists():
            return local
        base.mkdir(parents=True, exist_ok=True)
        objects = objectstore.stat(url)
        if job["spec"]["Format"] == "folder":
            local.mkdir(exist_ok=True)
            prefix = url.key if url.is_prefix else url.key + "/"
            for obj in objects:
                name = obj.key[len(prefix):]
                if name and "/" not in name:  # the folder's own files, as for a local folder
                    objectstore.download(url, obj.key, local / name)
        else:
            objectstore.download(url, objects[0].key, local)
        (base / ".complete").touch()
        return local

    def _upload(self, spec: dict[str, Any], out: Path) -> str:
        """A remote input's outputs next to it in the object store; returns where."""
        dest = remote_output(spec)
        target = objectstore.parse(dest)
        if spec["Format"] == "folder":
            for file in sorted(out.iterdir()):
                objectstore.upload(file, objectstore.ObjectUrl(target.scheme, target.bucket, target.key + file.name))
        else:
            objectstore.upload(out, target)
        return dest

    def _write(self, spec: dict[str, Any], out: Path, part: Path, results: list[tuple[Item, int, bytes]]) -> None:
        if spec["Format"] == "folder":
            for item, status, body in results:
                (out / f"{item.key}.json").write_bytes(_line(item, status, body))
            return
        with part.open("ab") as f:
            for item, status, body in results:
                f.write(_line(item, status, body))

    def _finish(self, job: dict[str, Any], out: Path, part: Path) -> None:
        spec, name, run = job["spec"], job["name"], job["run"]
        if spec["Format"] != "folder" and part.exists():
            # In input order, once each: a line written before a kill but not recorded is
            # written again on resume, and the last copy wins.
            lines: dict[int, bytes] = {}
            for raw in part.read_bytes().splitlines():
                if raw.strip():
                    lines[json.loads(raw)["index"]] = raw
            out.write_bytes(b"".join(lines[k] + b"\n" for k in sorted(lines)))
            part.unlink()
        finished = self.store.job_items(name, run)
        failed = sum(1 for ok, _ in finished.values() if not ok)
        where = str(out)
        if is_remote(spec["Input"]):
            try:
                where = self._upload(spec, out)
            except (objectstore.ObjectStoreError, OSError) as exc:
                self.store.update_job(name, state=FAILED, message=f"run {run}: uploading the outputs failed: {exc}")
                return
        message = f"run {run}: {len(finished)} items, {failed} failed; output {where}"
        schedule = spec.get("Schedule")
        if schedule:
            self.store.update_job(name, state=SCHEDULED, message=message, next_run=next_time(schedule, time.time()))
            self._own_service(job, Desired.STOPPED)
        else:
            self.store.update_job(name, state=SUCCEEDED, message=message)
            self._own_service(job, Desired.DELETED)
        log.info("job %s: %s", name, message)


def _line(item: Item, status: int, body: bytes) -> bytes:
    try:
        output: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        output = body.decode("utf-8", "replace")
    return json.dumps({"index": item.index, "item": item.key, "status": status, "output": output},
                      ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def describe(store: Store, name: str) -> dict[str, Any]:
    """A job as the API shows it: spec, state, progress and the first failures."""
    job = store.job(name)
    finished = store.job_items(name, job["run"]) if job["run"] else {}
    failures = [{"Item": k, "Error": e} for k, (ok, e) in finished.items() if not ok]
    total = job["total"]
    if total is None and not is_remote(job["spec"]["Input"]):
        try:
            total = count(job["spec"])
        except OSError:
            total = None
    return {"Name": name, "Service": job["spec"]["Service"], "State": job["state"], "Message": job["message"],
            "Run": job["run"], "Total": total, "Done": len(finished), "Failed": len(failures),
            "Failures": failures[:50], "NextRun": job["next_run"],
            "Output": remote_output(job["spec"]) if is_remote(job["spec"]["Input"]) else str(output_path(job["spec"])),
            "Spec": job["spec"], "CreateTime": job["created_at"], "UpdateTime": job["updated_at"]}
