"""The runtime: where the model runs, for one instance of a service, free of Ray.

It makes the model local, loads the processor once, then runs requests on a bounded
worker pool (`rpc.worker_threads`) so a slow model never blocks the event loop that
receives the next request. A built-in processor whose calls measure well under a
millisecond is called on the loop instead: for such models the hop to a worker thread
(and the GIL hand-offs it causes) costs more than the prediction. Ray Serve hosts it
(eas/backend/replica.py), but it runs and is tested on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from eas import sources
from eas.instance import oip
from eas.instance import container
from eas.instance.batching import BatchFn, Batcher
from eas.ratelog import BurstLog
from eas.sources import mounts as storage
from eas.spec import ServiceSpec
from processors import create_processor, signature_of
from processors.base import (ModelContext, ModelLoadError, Processor, ProcessorError, Request, Response, error_body, error_response,
                             json_response)

log = logging.getLogger("eas.runtime")
failures = BurstLog(log)

INLINE_MAX_S = 0.001
"""Estimated predict cost under which an inline-safe processor runs on the event loop."""


class ServiceRuntime:
    """Loads a service's processor and answers requests with it.

    Two kinds of request reach a model: an EAS predict body (`predict`) and an Open
    Inference Protocol call (`infer_v2`). Each has its own lane with the same rules:
    server-side batching when `rpc.batching` is on and the processor batches, the
    inline path for cheap built-in models, the worker pool otherwise.
    """

    def __init__(self, spec: dict[str, Any], cache_dir: str, device: str = "cpu",
                 host: ContainerHost | None = None) -> None:
        """`device`: "cuda" when the host gave this instance a GPU (the processor places the model on it).
        `host`: where this instance's containers run and under which labels (container services)."""
        self.spec = ServiceSpec.model_validate(spec)
        started = time.perf_counter()
        self.mounts = prepare_mounts(self.spec, cache_dir)
        self.sidecars: container.ContainerGroup | None = None
        host = host or ContainerHost(instance=uuid.uuid4().hex[:12], owner=container.owner_of(cache_dir))
        try:
            if self.spec.containers and self.spec.serving_container is None:
                # Beside a processor: the sidecars run first, so the processor finds them up.
                self.sidecars = container.ContainerGroup(self.spec, host.instance, host.owner, host.ip,
                                                         self.mounts.paths)
                self.sidecars.wait_healthy()
            self.processor = load_processor(self.spec, cache_dir, self.mounts, device, host)
            self.load_seconds = time.perf_counter() - started
            """Mounts + fetch + load time of this instance: its cold start, as metrics report it."""
            started = time.perf_counter()
            warm_up(self.processor, self.spec, cache_dir, self.mounts)
            self.warm_up_seconds = time.perf_counter() - started
        except BaseException:
            if self.sidecars is not None:
                self.sidecars.close()
            self.mounts.close()
            raise
        workers = self.spec.metadata.concurrency
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"eas-{self.spec.name}")
        rpc = self.spec.metadata.rpc
        batching = rpc.batching and self.processor.supports_batching
        if rpc.batching and not batching:
            log.warning("%s: rpc.batching is on but processor %s has no batched path; serving one by one",
                        self.spec.name, type(self.processor).__name__)
        processor, name = self.processor, self.spec.name
        # Looked up per call (not bound once), so a processor's methods can be wrapped later.
        self.lanes = {
            kind: _Lane(one, many, self.pool, workers, rpc.max_batch_size, rpc.max_batch_timeout / 1000,
                        batching, processor.inline_safe)
            for kind, one, many in (
                ("predict", lambda request: processor.predict(request),
                 lambda requests: processor.predict_batch(requests)),
                ("infer_v2", functools.partial(oip.infer_one, processor, name),
                 functools.partial(oip.infer_batch, processor, name)),
            )
        }

    @property
    def batcher(self) -> Batcher | None:
        """The EAS predict lane's batcher (its batch sizes are what /stats reports)."""
        return self.lanes["predict"].batcher

    @property
    def inline(self) -> InlinePolicy | None:
        return self.lanes["predict"].inline

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size ran, over every lane (cumulative)."""
        counts: Counter[int] = Counter()
        for lane in self.lanes.values():
            if lane.batcher is not None:
                counts.update(lane.batcher.size_counts)
        return dict(counts)

    async def run(self, kind: str, request: Request) -> Response:
        """Answer one request of `kind` ("predict", "infer_v2", or "signature": the model's
        inputs and outputs, EAS's GET on the predict path): batched, inline or pooled."""
        if kind == "signature":
            try:
                return json_response(signature_of(self.processor))
            except ProcessorError as exc:
                return error_response(exc, request.request_id)
        lane = self.lanes[kind]
        try:
            if lane.batcher is not None:
                return await lane.batcher.submit(request)
            if lane.inline is not None and lane.inline.now():
                return lane.inlined(request)
            response = await asyncio.get_running_loop().run_in_executor(self.pool, lane.pooled, request)
            if getattr(response, "chunks", None) is not None:  # user code streams its answer
                return await self._first_chunk(response)
            return response
        except ProcessorError as exc:
            return error_response(exc, request.request_id)
        except Exception as exc:  # a processor bug is the request's 400, never the instance's death
            # A body that makes user code raise can be sent on every request: one
            # traceback per burst, the rest counted (eas/ratelog.py).
            failures.exception(f"{self.spec.name}/{kind}", "processor of %s raised on request %s",
                               self.spec.name, request.request_id)
            return Response(error_body(400, f"processor raised {type(exc).__name__}: {exc}", request.request_id), 400)

    async def _first_chunk(self, response: Response) -> Response:
        """A streamed answer (processors/_usercode.py `StreamedResponse`) once its first
        chunk is there: `body` holds it and `chunks` the rest as a `ChunkStream`. The
        caller's keepalive covers this wait, as it covers a whole answer; whatever the
        first step raises is the request's error, as for any answer. A generator that
        yields nothing is an empty answer."""
        stream = ChunkStream(response.chunks, self.pool)  # type: ignore[attr-defined]
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            return Response(b"", response.status, response.content_type or "application/octet-stream")
        except BaseException:  # the keepalive passed, the client left, or the code raised
            await stream.aclose()
            raise
        response.body = first
        response.chunks = stream  # type: ignore[attr-defined]
        return response

    async def predict(self, request: Request) -> Response:
        """An EAS predict call: the body goes to the processor as it came."""
        return await self.run("predict", request)

    async def infer_v2(self, request: Request) -> Response:
        """An Open Inference Protocol call (v2 JSON, binary or serialized ModelInferRequest)."""
        return await self.run("infer_v2", request)

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.processor, "close", None)
        if callable(close):  # a container service's containers are removed with it
            close()
        if self.sidecars is not None:
            self.sidecars.close()
        self.mounts.close()

    def check(self) -> None:
        """Raise when this instance must be replaced (a container exited or fails its check)."""
        if isinstance(self.processor, container.ContainerProcessor):
            self.processor.check()
        if self.sidecars is not None:
            gone = self.sidecars.exited()
            if gone is not None:
                raise RuntimeError(gone.exit_reason())

    @property
    def container_endpoint(self) -> tuple[str, int] | None:
        """Where the serving container listens on this node (None: a processor serves)."""
        if isinstance(self.processor, container.ContainerProcessor) and self.processor.group is not None:
            return self.processor.group.endpoint
        return None

    @property
    def forwards_everything(self) -> bool:
        """A container serves: every method, sub-path and header goes to it as sent."""
        return isinstance(self.processor, container.ContainerProcessor)


@dataclass(frozen=True)
class ContainerHost:
    """Where an instance's containers run: its id (their label), the server that owns
    them (eas/instance/container.py `owner_of`), and the node address ports publish on."""

    instance: str
    owner: str
    ip: str = "127.0.0.1"


class _Lane:
    """One kind of request on its way to the model: batched, inline or on the pool."""

    def __init__(self, one: Callable[[Request], Response], many: BatchFn, pool: ThreadPoolExecutor,
                 workers: int, max_batch: int, batch_timeout_s: float, batching: bool, inline_safe: bool) -> None:
        self.one = one
        self.pool = pool
        self.batcher = Batcher(many, pool, workers, max_batch, batch_timeout_s) if batching else None
        self.inline = InlinePolicy() if inline_safe else None

    def pooled(self, request: Request) -> Response:
        """On a worker thread; measures the call's CPU when the model may run inline."""
        if self.inline is None:
            return self.one(request)
        started = time.thread_time()
        try:
            return self.one(request)
        finally:
            self.inline.pooled(time.thread_time() - started)

    def inlined(self, request: Request) -> Response:
        """On the event loop: only for cheap built-in models, measured as they run."""
        assert self.inline is not None
        started = time.process_time()
        try:
            return self.one(request)
        finally:
            self.inline.inlined(time.process_time() - started)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


class InlinePolicy:
    """Whether to call a cheap model on the event loop, from what its calls cost.

    Costs are CPU time, not wall time: on a busy machine the OS preempts a call now
    and then, and a pooled call's wall time includes waiting for the GIL; neither is
    the model's cost, and counting them would keep a cheap model in the pool for
    good. Inline calls count the whole process's CPU, so a model that computes on
    helper threads (onnxruntime's intra-op pool) still shows its full cost. A slow
    inline call moves the model to the pool at once; coming back takes a run of
    cheap pooled calls, so a heavy model is rarely retried on the loop.
    """

    def __init__(self, limit_s: float = INLINE_MAX_S) -> None:
        self.limit_s = limit_s
        self.estimate_s: float | None = None

    def now(self) -> bool:
        return self.estimate_s is not None and self.estimate_s < self.limit_s

    def inlined(self, cpu_s: float) -> None:
        self._add(cpu_s, 0.2 if cpu_s < self.limit_s else 0.6)

    def pooled(self, cpu_s: float) -> None:
        self._add(cpu_s, 0.05)

    def _add(self, sample: float, weight: float) -> None:
        current = self.estimate_s if self.estimate_s is not None else sample
        self.estimate_s = current + weight * (sample - current)


def warm_up(processor: Processor, spec: ServiceSpec, cache_dir: str, mounts: storage.Mounts | None = None) -> None:
    """Replay the recorded warm-up requests before the instance takes traffic.

    `.txt`: one request per line; anything else (`.bin`, as the SDKs write a
    serialised request): the whole file is one request. Each is sent
    `metadata.warm_up_count` times (EAS: 5). A failing request fails the instance with
    the reason, so a broken rollout never replaces instances that work.
    """
    if not spec.warm_up_data_path:
        return
    try:
        local = mounts.local(spec.warm_up_data_path) if mounts else spec.warm_up_data_path
        path = sources.resolve(local, f"{cache_dir}/warmup")
        with open(path, "rb") as fh:
            data = fh.read()
    except (sources.ModelSourceError, OSError) as exc:
        raise ModelLoadError(f"warm-up data {spec.warm_up_data_path}: {exc}") from None
    if str(path).endswith(".txt"):
        bodies = [line for line in data.splitlines() if line.strip()]
    else:
        bodies = [data]
    for number, body in enumerate(bodies, 1):
        for _ in range(spec.metadata.warm_up_count):
            try:
                answer = processor.predict(Request(body=body, request_id=f"warm-up-{number}"))
            except Exception as exc:
                raise ModelLoadError(f"warm-up request {number} failed: {exc}") from None
            if answer.status >= 400:
                raise ModelLoadError(f"warm-up request {number} answered {answer.status}: "
                                     f"{answer.body[:200].decode(errors='replace')}")


def prepare_mounts(spec: ServiceSpec, cache_dir: str) -> storage.Mounts:
    """The service's `storage` mounts on this node (eas/sources/mounts.py); a mount that
    cannot be made fails the instance with the reason."""
    try:
        return storage.prepare(spec.to_dict().get("storage"), cache_dir, spec.oss_endpoint,
                               shm_gb=spec.metadata.shm_size)
    except sources.ModelSourceError as exc:
        raise ModelLoadError(str(exc)) from None


def load_processor(spec: ServiceSpec, cache_dir: str, mounts: storage.Mounts | None = None,
                   device: str = "cpu", host: ContainerHost | None = None) -> Processor:
    """Fetch the model and code (paths under a mount_path read the mount), check the
    model's digest, build the processor and load it.

    Every failure becomes a ModelLoadError whose text is what the user reads in
    `eascmd desc` (the controller shows the last line of it).
    """
    mounts = mounts or storage.Mounts()
    if spec.serving_container is not None:
        host = host or ContainerHost(instance=uuid.uuid4().hex[:12], owner=container.owner_of(cache_dir))
        ctx = ModelContext(workers=spec.metadata.concurrency, mounts=mounts.paths, device=device)
        served = container.ContainerProcessor(ctx, spec, host.instance, host.owner, host.ip)
        served.load()  # starts the containers and waits for the health check (ModelLoadError says why not)
        return served
    try:
        processor = create_processor(
            spec.to_dict(),
            model_dir=sources.resolve(mounts.local(spec.model_path), f"{cache_dir}/models", spec.oss_endpoint,
                                      sha256=spec.model_sha256),
            processor_path=sources.resolve(mounts.local(spec.processor_path), f"{cache_dir}/code",
                                           spec.oss_endpoint),
            workers=spec.metadata.concurrency,
            mounts=mounts.paths,
            device=device,
        )
        _ = processor.decode_limits  # a bad max_request_* in model_config fails the load, not a request
        return processor
    except ModelLoadError:
        raise
    except (sources.ModelSourceError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:
        raise ModelLoadError(f"loading failed with {type(exc).__name__}: {exc}") from None


class ChunkStream:
    """The chunks of a streamed answer as an async iterator of bytes.

    A plain generator's steps may block (user code waiting on a model), so each runs on
    the worker pool, one at a time; between steps no thread is held. An async generator
    runs on the event loop. `aclose()` stops it: the generator is closed (GeneratorExit
    in the user's code) as soon as a step under way returns, on a worker thread, so the
    instance's worker is free again then.
    """

    def __init__(self, chunks: Any, pool: ThreadPoolExecutor) -> None:
        self._it = chunks
        self._pool = pool
        self._sync = not hasattr(chunks, "__anext__")
        self._step: concurrent.futures.Future[Any] | None = None
        self._closed = False

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        if not self._sync:
            return await self._it.__anext__()
        self._step = self._pool.submit(_next_chunk, self._it)
        chunk = await asyncio.wrap_future(self._step)
        if chunk is _END:
            self._closed = True
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._sync:
            try:
                await self._it.aclose()
            except Exception:  # the generator failed while closing: nothing to tell the client any more
                log.info("closing a streamed answer failed", exc_info=True)
            return
        close = getattr(self._it, "close", None)
        if close is None:
            return

        def after_step(_: object = None) -> None:
            try:
                self._pool.submit(close)
            except RuntimeError:  # the pool is shut down: the instance is stopping
                pass

        if self._step is not None and not self._step.done():
            self._step.add_done_callback(after_step)  # a step under way: close once it returns
        else:
            after_step()


_END = object()


def _next_chunk(chunks: Any) -> Any:
    """One step of a plain generator, on a worker thread (StopIteration cannot cross a future)."""
    try:
        return next(chunks)
    except StopIteration:
        return _END
