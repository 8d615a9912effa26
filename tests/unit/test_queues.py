"""The queues of Async services in the store (eas/control/queues.py), on SQLite and on a
real PostgreSQL (tests/support/postgres.py); the queue wire codec; the `queue` block and
`queue[backlog]` scaling decisions. The SDKs against a real server: tests/sdk/test_queue_*.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eas import spec as specs
from eas.control import store as st
from eas.control.autoscale import Load, recommend
from eas.control.queues import QueueFull, Queues, sink_of
from eas.protocols import queue_wire as wire
from eas.spec.elastic import AutoscalerSpec
from tests.support.postgres import pg_fixture, target_fixture  # noqa: F401 - fixtures


@pytest.fixture
def queues(target: str) -> Iterator[Queues]:
    store = st.Store(target)
    yield Queues(store)
    store.close()


def test_put_numbers_entries_and_get_reads_by_index_request_id_and_tags(queues: Queues) -> None:
    a = queues.put("svc", b"a", {"user": "x"})
    b = queues.put("svc", b"b", {"user": "y"})
    assert (a.index, b.index) == (1, 2) and a.request_id != b.request_id
    assert a.tags == {"user": "x", "requestId": a.request_id}
    assert [e.data for e in queues.get("svc", index=2)] == [b"b"]
    assert [e.data for e in queues.get("svc", request_id=a.request_id)] == [b"a"]
    assert [e.data for e in queues.get("svc", length=5, tags={"user": "y"})] == [b"b"]
    assert [e.data for e in queues.get("svc", length=5, delete=True)] == [b"a", b"b"]
    assert queues.stats("svc").length == 0 and queues.stats("svc").last == 2
    assert queues.put("svc", b"c", {}).index == 3  # indexes are never reused


def test_take_complete_release_deliver_at_least_once_and_answer_once(queues: Queues) -> None:
    for i in range(3):
        queues.put("svc", f"r{i}".encode(), {"n": str(i)}, priority=1 if i == 2 else 0)
    taken = queues.take("svc", "server-a:dispatch", limit=2)
    assert [e.data for e in taken] == [b"r2", b"r0"]  # priority first, then oldest
    assert all(e.attempts == 1 for e in taken)
    assert queues.take("svc", "server-a:watch", limit=5)[0].data == b"r1"  # only what nobody holds
    assert queues.backlogs() == {"svc": 3}  # waiting or running: not answered yet
    assert queues.complete(taken[0], b"answer", extra_tags={"status": "200"})
    assert not queues.complete(taken[0], b"again")  # answered once: the request is gone
    sink = queues.get(sink_of("svc"), length=5)
    assert [(e.data, e.request_id, e.tags["n"], e.tags["status"]) for e in sink] == \
        [(b"answer", taken[0].request_id, "2", "200")]
    # A server restarted (every taker of it) hands back what it held: delivered again, counted.
    assert queues.release("server-a:") == 2
    again = queues.take("svc", "server-b:dispatch", limit=5)
    assert sorted((e.data, e.attempts) for e in again) == [(b"r0", 2), (b"r1", 2)]
    stale = taken[1]  # the dispatcher that held r0 before is gone: its answer is dropped
    assert not queues.complete(stale, b"late")
    assert queues.release_all() == 2 and queues.stats("svc").taken == 0


def test_limits_delete_truncate_position(queues: Queues) -> None:
    for i in range(3):
        queues.put("svc", b"x", {}, max_length=3)
    with pytest.raises(QueueFull):
        queues.put("svc", b"x", {}, max_length=3)
    queues.put("svc", b"newest", {}, max_length=3, evict=True)  # the oldest makes room
    assert [e.index for e in queues.get("svc", length=10)] == [2, 3, 4]
    assert queues.position("svc", 4) == {"IsPending": False, "WaitCount": 2}
    assert queues.position("svc", 1) is None
    assert queues.delete("svc", [3]) == 1
    assert queues.truncate("svc", 4) == 1
    assert [e.data for e in queues.get("svc", length=10)] == [b"newest"]
    taker = "s:watch-1"
    queues.take("svc", taker)
    assert queues.held(taker, "svc") == 1


def test_a_deleted_service_takes_its_queues_along(tmp_path: Path) -> None:
    store = st.Store(tmp_path / "eas.db")
    store.create_service("svc", {"name": "svc", "metadata": {"instance": 1, "type": "Async"}}, "tok-aaaaaaaa")
    queues = Queues(store)
    queues.put("svc", b"x", {})
    queues.put(sink_of("svc"), b"y", {})
    store.remove("svc")
    assert queues.stats("svc").length == queues.stats(sink_of("svc")).length == 0
    assert queues.put("svc", b"z", {}).index == 1


def test_wire_codec_and_query_errors() -> None:
    body = wire.encode_list([(7, b"data", {"requestId": "r"}, "")])
    frames = wire.DataFrameListProto.FromString(body).index
    assert (frames[0].index, frames[0].data, dict(frames[0].tags)) == (7, b"data", {"requestId": "r"})
    assert dict(wire.AttributesProto.FromString(wire.encode_attributes({"a": "1"})).attributes) == {"a": "1"}
    assert wire.duration_s("5s") == 5 and wire.duration_s("1m0s") == 60 and wire.duration_s("500ms") == 0.5
    assert wire.duration_s("0s") == 0 and wire.duration_s("3") == 3 and wire.duration_s("1h30m") == wire.MAX_TIMEOUT_S
    for bad in ("soon", "5x", "-1"):
        with pytest.raises(wire.QueueRequestError):
            wire.duration_s(bad)
    with pytest.raises(wire.QueueRequestError, match="_length_"):
        wire.integer({"_length_": "many"}, "_length_", 1)
    with pytest.raises(wire.QueueRequestError, match="_indexes_"):
        wire.indexes({"_indexes_": "1,x"})
    assert wire.tags_of({"_index_": "1", "user": "x", "_other_": "y"}) == {"user": "x"}


def test_async_spec_queue_block_and_kept_fields() -> None:
    base = {"name": "a", "processor": "onnx", "metadata": {"instance": 1, "type": "Async"}}
    s = specs.parse({**base, "queue": {"max_delivery": 2, "sink": {"max_length": 50, "auto_evict": True},
                                       "cpu": 2, "memory": 4000}})
    assert s.metadata.is_async and s.queues.max_delivery == 2 and s.queues.sink.max_length == 50
    assert s.queues.source.max_length == 10_000
    assert s.kept_fields() == ["queue.cpu", "queue.memory"]  # the queues live in the store here
    assert specs.is_async(s.to_dict())
    with pytest.raises(specs.SpecError):
        specs.parse({**base, "queue": {"max_delivry": 2}})
    sync = specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1}, "queue": {}})
    assert sync.kept_fields() == ["queue"]  # a queue block without metadata.type Async does nothing
    plain = specs.parse({"name": "a", "processor": "onnx", "metadata": {"instance": 1}})
    assert plain.code_version() == specs.parse(base).code_version()  # Async runs the same processor


def test_backlog_scales_on_requests_per_instance() -> None:
    spec = AutoscalerSpec.model_validate({"min": 0, "max": 3, "scaleStrategies": [
        {"metricName": "queue[backlog]", "threshold": 5}]})
    assert recommend(1, Load(backlog=30), spec)[0] == 3  # ceil(30 / 5) = 6, at most max
    assert recommend(0, Load(backlog=4), spec)[0] == 1  # from zero: a put wakes it
    assert recommend(2, Load(backlog=0), spec)[0] == 0  # an empty queue: down to min


def test_a_read_loads_a_bounded_amount_of_data(queues: Queues) -> None:
    for i in range(5):
        queues.put("svc", bytes([i]) * 1000, {})
    assert [len(e.data) for e in queues.get("svc", length=5, max_bytes=2500)] == [1000, 1000]
    assert len(queues.get("svc", length=5, max_bytes=10)) == 1  # one, whatever its size
    taken = queues.take("svc", "s:w", limit=5, max_bytes=3000)
    assert [e.data[0] for e in taken] == [0, 1, 2]
    with pytest.raises(wire.QueueRequestError, match="at most"):
        wire.indexes({"_indexes_": ",".join(str(i) for i in range(wire.MAX_INDEXES + 1))})


def test_an_auto_commit_watcher_that_leaves_at_once_gets_nothing_twice(tmp_path: Path) -> None:
    """A client that closes its watch the moment it has its frames (the SDKs' Close())
    stops the watch wherever it is; the entries it was sent must stay committed, not be
    handed back and sent to the next watcher (seen once in a Go SDK run)."""
    import asyncio

    from eas.queue.http import Watch
    from eas.queue.service import QueueService

    store = st.Store(str(tmp_path / "eas.db"))
    try:
        service = QueueService(store, "server-a")
        for i in range(2):
            service.queues.put("svc/sink", f"r{i}".encode(), {})

        async def watch_and_leave() -> int:
            frames = Watch.of({"_window_": "5", "_auto_commit_": "true"}, "svc/sink", service).frames()
            got = [await anext(frames) for _ in range(2)]
            await frames.aclose()  # the client leaves right after its last frame
            return len(got)

        assert asyncio.run(watch_and_leave()) == 2
        assert service.queues.stats("svc/sink").length == 0
    finally:
        store.close()
