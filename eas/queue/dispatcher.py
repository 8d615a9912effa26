"""Feeds each Async service's instances from its input queue and puts answers on its sink.

The processor is the same as for a synchronous service: the dispatcher takes one
request per free worker (instances x `metadata.rpc.worker_threads`/`workers`), sends it
through the gateway's forwarding (`Gateway.forward`: pooled connections, another
instance when one refuses) and, in one store transaction, puts the answer on the sink
(the request's tags, `requestId`, its `sourceIndex` and the instance's `status`) and
removes the request from the input queue.

Delivery is at least once, answered once:
- an instance that dies before answering (503/502/504 from forwarding) hands the
  request back; it is taken again, counting a delivery, and after `queue.max_delivery`
  deliveries it goes to the sink with an error message instead;
- a `kill -9` of eas-server leaves requests taken by a dispatcher that is gone: the
  dispatcher that starts next (this server again, or another that becomes leader)
  hands every one of them back before taking any;
- an answer is written only while its request is still held by this dispatcher, in
  the same transaction that removes the request, so no request is answered twice.

Only the server whose controller leads dispatches (one dispatcher per store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from eas.control.queues import QueueEntry, QueueFull, sink_of
from eas.gateway.core import Call, Gateway
from eas.queue.service import POLL_S, REFRESH_S, QueueService
from eas.ratelog import BurstLog
from eas.spec.queue import QueueSide

log = logging.getLogger("eas.queue.dispatcher")
failures = BurstLog(log)

#: Statuses that mean the platform failed to get an answer (not the processor's answer).
UNDELIVERED = frozenset({502, 503, 504})


class Dispatcher:
    def __init__(self, service: QueueService, gateway: Gateway, leading: Callable[[], bool]) -> None:
        self.service = service
        self.gateway = gateway
        self.leading = leading
        self.taker = service.taker("dispatch")
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._main: asyncio.Task[None] | None = None
        self._was_leading = False
        self.delivered = 0
        self.redelivered = 0

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self._pumps.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        # Whatever this server held before a restart (watchers' frames sent, not committed;
        # its dispatcher's requests) goes back to be delivered again.
        with contextlib.suppress(Exception):
            handed = await self.service.run(self.service.queues.release, self.service.taker(""))
            if handed:
                log.info("handed back %d queue entries this server held before it restarted", handed)
        while True:
            try:
                await self.service.run(self.service.refresh)
                leading = self.leading()
                if leading and not self._was_leading:
                    # Whatever a dispatcher that is gone (killed, deposed) held goes back.
                    handed = await self.service.run(self.service.queues.release_all)
                    if handed:
                        log.info("handed back %d queued requests held by a dispatcher that is gone", handed)
                self._was_leading = leading
                for name in list(self._pumps):
                    if name not in self.service.specs or self._pumps[name].done():
                        self._pumps.pop(name).cancel()
                if leading:
                    for name in self.service.specs:
                        if name not in self._pumps:
                            self._pumps[name] = asyncio.get_running_loop().create_task(self._pump(name))
            except asyncio.CancelledError:
                raise
            except Exception:
                failures.exception("dispatcher", "queue dispatcher pass failed; retrying")
            await asyncio.sleep(REFRESH_S)

    def _slots(self, name: str) -> int:
        route = self.gateway.routes.get(name)
        spec = self.service.specs.get(name)
        if route is None or spec is None:
            return 0
        return len(route.endpoints) * spec.metadata.concurrency

    async def _pump(self, name: str) -> None:
        """Keep every worker of the service busy while requests wait."""
        running: set[asyncio.Task[None]] = set()
        try:
            while name in self.service.specs and self.leading():
                free = self._slots(name) - len(running)
                if free > 0:
                    try:
                        entries = await self.service.run(self.service.queues.take, name, self.taker, limit=free)
                    except Exception:
                        failures.exception(f"take:{name}", "taking requests from %s failed; retrying", name)
                        entries = []
                    for entry in entries:
                        task = asyncio.get_running_loop().create_task(self._deliver(name, entry))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if entries:
                        continue
                waiter = asyncio.ensure_future(self.service.wait_change(name, POLL_S))
                await asyncio.wait({waiter, *running}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(Exception):  # a pump that stops hands back what it holds
                await self.service.run(self.service.queues.release, self.taker, name)

    async def _deliver(self, name: str, entry: QueueEntry) -> None:
        spec = self.service.specs.get(name)
        max_delivery = spec.queues.max_delivery if spec else 1
        sink = spec.queues.sink if spec else None
        if entry.attempts > max_delivery:
            await self._answer(entry, b"", {"status": "500"}, sink,
                               f"request not answered after {max_delivery} deliveries: its instance failed each time")
            return
        route = self.gateway.routes.get(name)
        if route is None:
            await self._hand_back(name, entry)
            return
        call = Call(service=name, headers={}, path=f"/api/predict/{name}", body=entry.data, method="POST",
                    request_id=entry.request_id)
        try:
            answer = await self.gateway.forward(route, call)
        except Exception as exc:
            log.warning("queued request %s of %s failed in forwarding: %s", entry.request_id, name, exc)
            await self._hand_back(name, entry)
            return
        if answer.status in UNDELIVERED:
            log.info("queued request %s of %s not answered (%d, delivery %d of %d): handed back", entry.request_id,
                     name, answer.status, entry.attempts, max_delivery)
            self.redelivered += 1
            await self._hand_back(name, entry)
            return
        body = answer.body
        if answer.stream is not None:  # never asked for, but an instance may stream: read it whole
            body = b"".join([chunk async for chunk in answer.stream])
        message = "" if answer.status < 400 else body.decode("utf-8", "replace")[:1000]
        await self._answer(entry, body, {"status": str(answer.status)}, sink, message)

    async def _answer(self, entry: QueueEntry, body: bytes, tags: dict[str, str], sink: QueueSide | None,
                      message: str) -> None:
        extra = {**tags, "sourceIndex": str(entry.index)}
        max_length = sink.max_length if sink else None
        evict = sink.auto_evict if sink else False
        while True:
            try:
                done = await self.service.run(self.service.queues.complete, entry, body, message, extra,
                                              max_length, evict)
                break
            except QueueFull:  # the sink is full: wait for a consumer to make room
                await asyncio.sleep(POLL_S)
        if done:
            self.delivered += 1
            self.service.changed(sink_of(entry.queue))

    async def _hand_back(self, name: str, entry: QueueEntry) -> None:
        await self.service.run(self.service.queues.release, self.taker, name, [entry.index])
        await asyncio.sleep(POLL_S)  # a failing instance is not hammered; the next take counts a delivery
        self.service.changed(name)
