"""Server-side batching: gather concurrent requests into one model call.

Requests wait at most `max_batch_timeout` for company, and a batch never exceeds
`max_batch_size`. Batches run on the instance's worker pool; while every worker is busy
the queue keeps filling, so batches grow exactly when the model is the bottleneck.

One bad request fails only itself: batch functions answer a bad request with its own
error response, and should one raise anyway (or answer the wrong number of requests),
the batch is run again one request at a time, so only the culprit hears the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import Executor
from typing import Callable, Sequence

from processors.base import Request, Response

BatchFn = Callable[[Sequence[Request]], list[Response]]

log = logging.getLogger("eas.instance.batching")


def _answers(fn: BatchFn, requests: Sequence[Request]) -> list[Response]:
    """`fn(requests)`, refusing an answer list that does not line up with the requests."""
    answers = fn(requests)
    if not isinstance(answers, list) or len(answers) != len(requests):
        count = len(answers) if isinstance(answers, list) else type(answers).__name__
        raise RuntimeError(f"the batch function answered {count} for {len(requests)} requests")
    return answers


class Batcher:
    def __init__(self, fn: BatchFn, pool: Executor, workers: int, max_size: int, timeout_s: float) -> None:
        self.fn = fn
        self.pool = pool
        self.max_size = max_size
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[tuple[Request, asyncio.Future[Response]]] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._workers = workers
        self._task: asyncio.Task[None] | None = None
        self.size_counts: Counter[int] = Counter()
        """How many batches of each size ran (cumulative, for metrics and tests)."""

    async def submit(self, request: Request) -> Response:
        if self._task is None:
            # Started on first use, inside the loop that serves requests.
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self._workers)
            self._task = asyncio.get_running_loop().create_task(self._collect())
        assert self._queue is not None
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            batch = [await self._queue.get()]
            deadline = loop.time() + self.timeout_s
            while len(batch) < self.max_size:
                remaining = deadline - loop.time()
                if remaining <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(self._queue.get_nowait() if remaining <= 0
                                 else await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            live = [(r, f) for r, f in batch if not f.done()]  # callers that gave up are dropped
            if not live:
                self._slots.release()
                continue
            loop.create_task(self._run(live))

    async def _run(self, batch: list[tuple[Request, asyncio.Future[Response]]]) -> None:
        assert self._slots is not None
        try:
            self.size_counts[len(batch)] += 1
            loop = asyncio.get_running_loop()
            try:
                answers = await loop.run_in_executor(self.pool, _answers, self.fn, [r for r, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                # One request may have sunk the batch: run each alone, so only it fails.
                log.warning("a batch of %d failed (%s: %s); answering its requests one by one",
                            len(batch), type(exc).__name__, exc)
                for request, fut in batch:
                    if fut.done():  # the caller gave up meanwhile
                        continue
                    try:
                        (answer,) = await loop.run_in_executor(self.pool, _answers, self.fn, [request])
                    except Exception as alone:
                        _settle(fut, alone)
                    else:
                        _settle(fut, answer)
                return
            except BaseException as exc:  # cancelled, or the worker died: every caller hears it
                for _, fut in batch:
                    _settle(fut, exc)
                return
            for (_, fut), answer in zip(batch, answers):
                _settle(fut, answer)
        finally:
            self._slots.release()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _settle(fut: "asyncio.Future[Response]", outcome: Response | BaseException) -> None:
    if fut.done():
        return
    if isinstance(outcome, BaseException):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)
