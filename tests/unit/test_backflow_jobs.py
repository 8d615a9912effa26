"""Data backflow capture and batch job planning in-process (the end-to-end runs are in
tests/e2e/test_bml.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from eas.control import jobs
from eas.control.backflow import BackflowWriter, record_of
from eas.control.store import Store
from eas.gateway.backflow import Capture


def test_capture_samples_bounded_and_never_blocks() -> None:
    draws = iter([0.05, 0.5, 0.09, 0.01])
    capture = Capture(max_pending=2, draw=lambda: next(draws))
    kept = [capture.offer("svc", f"r{i}", 0.1, 4, b"0123456789", "application/json", 200, b"\xff\xfe", None)
            for i in range(4)]
    assert kept == [True, False, True, True]
    assert len(capture) == 2 and capture.dropped == 1  # the oldest waiting copy went
    first, second = capture.drain()
    assert (first.request_id, second.request_id) == ("r2", "r3")
    record = record_of(first)
    assert record["request"] == {"content_type": "application/json", "bytes": 10, "truncated": True, "body": "0123"}
    assert record["answer"]["body_base64"] == "//4=" and not record["answer"]["truncated"]
    assert capture.offer("svc", "r", 0.0, 4, b"", None, 200, b"", None) is False


def test_writer_keeps_the_newest_records_per_service(tmp_path: Path) -> None:
    store = Store(tmp_path / "eas.db")
    store.create_service("svc", {"name": "svc", "backflow": {"ratio": 1, "keep": 3}}, "token-123456")
    capture = Capture(draw=lambda: 0.0)
    writer = BackflowWriter(store, capture)
    for i in range(5):
        capture.offer("svc", f"r{i}", 1.0, 100, b"{}", None, 200, b"{}", None)
    capture.offer("gone", "x", 1.0, 100, b"{}", None, 200, b"{}", None)  # no such service: dropped
    assert writer.flush() == 5
    rows = store.backflow("svc")
    assert [json.loads(r["record"])["request_id"] for r in rows] == ["r2", "r3", "r4"]
    assert store.backflow("gone") == []
    store.remove("svc")
    assert store.backflow_count("svc") == 0


def test_schedules_plan_the_next_period() -> None:
    start = datetime(2026, 1, 31, 8, 0, tzinfo=timezone.utc).timestamp()
    assert jobs.next_time({"Every": "hour", "Start": start}, start - 10) == start
    assert jobs.next_time({"Every": "hour", "Start": start}, start) == start + 3600
    assert jobs.next_time({"Every": "week", "Start": start}, start + 1) == start + 7 * 86400
    feb = jobs.next_time({"Every": "month", "Start": start}, start)
    assert datetime.fromtimestamp(feb, timezone.utc) == datetime(2026, 2, 28, 8, 0, tzinfo=timezone.utc)


def test_job_inputs_and_outputs(tmp_path: Path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": 2}\n')
    spec = jobs.check_spec({"Name": "j", "Service": "s", "Input": str(lines)})
    assert spec["Format"] == "jsonl" and jobs.count(spec) == 2
    assert jobs.output_path(spec) == tmp_path / "in.jsonl.out.jsonl"
    table = tmp_path / "rows.csv"
    table.write_text("sepal_length,name\n5.1,a\n")
    spec = jobs.check_spec({"Name": "t", "Service": "s", "Input": str(table)})
    (item,) = jobs.items(spec)
    assert json.loads(item.body) == {"include_req": False, "data": [{"sepal_length": 5.1, "name": "a"}]}
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(b"\xff\xd8")
    spec = jobs.check_spec({"Name": "f", "Service": "s", "Input": str(folder)})
    assert [i.key for i in jobs.items(spec)] == ["b.jpg"] and jobs.output_path(spec) == tmp_path / "images_output"


@pytest.mark.parametrize(("spec", "message"), [
    ({"Name": "bad name", "Service": "s", "Input": "/"}, "Name"),
    ({"Name": "j", "Service": "s", "Input": "/nonexistent/x.jsonl"}, "does not exist"),
    ({"Name": "j", "Service": "s", "Input": "/", "Concurrency": 0}, "Concurrency"),
    ({"Name": "j", "Service": "s", "Input": "/", "Schedule": {"Every": "fortnight"}}, "Schedule"),
    ({"Name": "j", "Service": "s", "Input": "/", "Extra": 1}, "unknown job fields: Extra"),
])
def test_bad_job_specs_say_why(spec: dict, message: str) -> None:
    with pytest.raises(jobs.JobError, match=message):
        jobs.check_spec(spec)
