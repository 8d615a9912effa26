"""Drives the official `eas-prediction` QueueClient, unchanged; runs in tests/sdk/python/.venv.

pytest (main venv) runs this script with one JSON object on stdin and reads one line
starting with RESULT_MARK back:

  {"scenario": "roundtrip", "endpoint", "service", "token", "n", ["endpoint_type": "DIRECT"]}
      put n requests with tags on the input queue, watch the sink with commit, then on
      the sink: get by request id and by index, attributes, search, delete, truncate,
      a watch with auto-commit, an empty long poll, a wrong token
  {"scenario": "put", "endpoint", "service", "token", "bodies": [str], "tags": {..}}
      put each body on the input queue: [[index, request id], ...]
  {"scenario": "collect", "endpoint", "service", "token", "count", "window", "deadline_s"}
      watch the sink with commit until `count` distinct request ids came (or the
      deadline): every frame seen, in order, and the sink's attributes after
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from eas_prediction import QueueClient
from eas_prediction.exception import PredictException

RESULT_MARK = "SDK-RESULT "


def queue(cfg: dict, name: str, token: str | None = None) -> QueueClient:
    client = QueueClient(cfg["endpoint"], name)
    if cfg.get("endpoint_type"):  # DIRECT: the addresses from service discovery
        client.set_endpoint_type(cfg["endpoint_type"])
    client.set_token(token if token is not None else cfg["token"])
    client.set_timeout(30000)
    client.init(uid="sdk-test", gid="eas")
    return client


def frame(df) -> dict:  # noqa: ANN001
    return {"index": int(df.index), "tags": dict(df.tags), "data": df.data.decode("utf-8", "replace"),
            "message": df.message}


def watch_frames(sink: QueueClient, count: int, window: int, commit: bool, auto_commit: bool,
                 deadline_s: float, distinct: bool = False) -> list[dict]:
    """Frames from a watch until `count` (distinct request ids when asked) or the deadline."""
    frames: list[dict] = []
    seen: set[str] = set()
    done = threading.Event()
    watcher = sink.watch(0, window, auto_commit=auto_commit)

    def run() -> None:
        for df in watcher.run():
            frames.append(frame(df))
            seen.add(df.tags.get("requestId", ""))
            if commit:
                commit_until_done(sink, int(df.index))
            if (len(seen) if distinct else len(frames)) >= count:
                break
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.wait(deadline_s)
    watcher.close()
    return frames


def commit_until_done(sink: QueueClient, index: int, deadline_s: float = 120) -> None:
    """A commit, retried while the server is away (what a client that must not lose its
    place does); a frame whose commit never arrived is sent again after the restart."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            sink.commit(index)
            return
        except PredictException:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def wait_length(q: QueueClient, length: int, deadline_s: float = 10) -> int:
    """The queue's stream.length once it is `length` (or whatever it is at the deadline)."""
    end = time.monotonic() + deadline_s
    while True:
        now = int(q.attributes()["stream.length"])
        if now == length or time.monotonic() > end:
            return now
        time.sleep(0.05)


def roundtrip(cfg: dict) -> dict:
    inq, sink = queue(cfg, cfg["service"]), queue(cfg, cfg["service"] + "/sink")
    out: dict = {"input_attrs": inq.attributes()}
    puts = [inq.put(f"item-{i}", tags={"n": str(i)}) for i in range(cfg["n"])]
    out["puts"] = [[int(i), rid] for i, rid in puts]
    out["frames"] = watch_frames(sink, cfg["n"], 3, commit=True, auto_commit=False, deadline_s=60)
    out["sink_length_after_commit"] = wait_length(sink, 0)
    out["input_length_after"] = wait_length(inq, 0)

    idx, rid = sink.put("abc", tags={"kind": "direct"})
    by_id = sink.get(request_id=rid)
    out["get_by_request_id"] = [frame(df) for df in by_id]
    idx, rid = sink.put("def")
    out["get_by_index"] = [frame(df) for df in sink.get(index=idx)]
    kept = [sink.put(f"keep-{i}") for i in range(3)]
    out["length_three"] = int(sink.attributes()["stream.length"])
    out["search"] = sink.search(kept[2][0])
    sink.delete(kept[0][0])
    out["length_after_delete"] = int(sink.attributes()["stream.length"])
    out["peek"] = [frame(df) for df in sink.get(index=0, length=5, auto_delete=False)]
    last = int(sink.attributes()["stream.lastEntry"])
    sink.truncate(last + 1)
    out["length_after_truncate"] = int(sink.attributes()["stream.length"])

    for i in range(10):
        sink.put(str(i))
    auto = watch_frames(sink, 10, 5, commit=False, auto_commit=True, deadline_s=60)
    out["auto_commit_data"] = [f["data"] for f in auto]
    out["length_after_auto_commit"] = wait_length(sink, 0)

    started = time.monotonic()
    out["empty_long_poll"] = [frame(df) for df in sink.get(index=0, length=1, timeout="1s")]
    out["long_poll_waited"] = time.monotonic() - started >= 0.9

    bad = queue(cfg, cfg["service"], token="wrong-token-123")
    bad.set_retry_count(0)
    try:
        bad.put("nope")
        out["wrong_token"] = None
    except PredictException as exc:
        out["wrong_token"] = exc.code
    return out


def put(cfg: dict) -> list[list]:
    inq = queue(cfg, cfg["service"])
    return [[int(i), rid] for i, rid in (inq.put(b, tags=cfg.get("tags", {})) for b in cfg["bodies"])]


def collect(cfg: dict) -> dict:
    sink = queue(cfg, cfg["service"] + "/sink")
    frames = watch_frames(sink, cfg["count"], cfg.get("window", 5), commit=True, auto_commit=False,
                          deadline_s=cfg.get("deadline_s", 120), distinct=True)
    return {"frames": frames, "sink_attrs": sink.attributes(), "input_attrs": queue(cfg, cfg["service"]).attributes()}


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    result = {"roundtrip": roundtrip, "put": put, "collect": collect}[cfg["scenario"]](cfg)
    print(RESULT_MARK + json.dumps(result), flush=True)
    os._exit(0)  # watcher threads of the SDK may still block in recv


if __name__ == "__main__":
    main()
