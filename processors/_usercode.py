"""Helpers shared by the user-code styles (EAS classes and the BML styles in bml.py).

Failures in user code must point at the user's file and line, and optional
constructor/method parameters must be detected the same way for every style.

Streaming: user code that returns a generator (or an async generator) instead of a
body answers piece by piece: `streamed` turns it into a `StreamedResponse` whose
chunks the instance sends as they are yielded (eas/instance/runtime.py runs a plain
generator's steps on its worker threads, an async one on its event loop).
"""

from __future__ import annotations

import inspect
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from ._jsonio import guess_content_type
from .base import ModelLoadError, ProcessorError, Response

#: The first bytes of a server-sent event: a stream that starts so is sent as text/event-stream.
_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")


def user_location(exc: BaseException, user_dir: Path) -> str:
    """` (at file:line)` of the deepest frame in user code: where the user should look."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    prefix = str(user_dir.resolve()) + os.sep
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.abspath(f.filename).startswith(prefix)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_failure(what: str, exc: BaseException, user_dir: Path) -> ModelLoadError:
    return ModelLoadError(f"{what}: {type(exc).__name__}: {exc}{user_location(exc, user_dir)}")


def accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def positional_count(func: Any) -> tuple[int, int]:
    """(required, total) positional parameters of a bound method."""
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return 0, 0
    return sum(p.default is p.empty for p in params), len(params)


@dataclass
class StreamedResponse(Response):
    """An answer user code produces piece by piece: `body` is empty and `chunks` yields
    the pieces as bytes, a plain iterator (each step may block: the runtime runs it on a
    worker thread) or an async one (run on the instance's event loop). `content_type`
    is set from the first piece (`stream_type`) unless the code chose it."""

    chunks: Iterator[bytes] | AsyncIterator[bytes] | None = None


def is_stream(value: Any) -> bool:
    """A generator or async generator: what user code returns to stream its answer."""
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def stream_type(first: bytes, kind: str) -> str:
    """The content type of a stream, from its first piece and what kind of value it was
    ("bytes", "text", or "json": objects sent as JSON lines): server-sent events when it
    starts like one, else as the piece looks."""
    if first.lstrip().startswith(_SSE_STARTS):
        return "text/event-stream"
    if kind == "json":
        return "application/x-ndjson"
    guessed = guess_content_type(first)
    return "text/plain; charset=utf-8" if kind == "text" and guessed != "application/json" else guessed


def streamed(result: Any, status: int, encode: Callable[[Any], tuple[bytes, str]],
             user_error: Callable[[Exception], ProcessorError]) -> StreamedResponse:
    """A `StreamedResponse` for the generator `result`: each item it yields goes out as
    `encode(item)` (bytes, and the kind of value: see `stream_type`); whatever the generator raises
    becomes `user_error(exc)` (a ProcessorError naming the user's fault). Closing the
    stream closes the generator (GeneratorExit inside the user's code: its `finally`
    blocks run)."""
    response = StreamedResponse(b"", status, "")

    def first_seen(item: Any) -> bytes:
        data, kind = encode(item)
        if not response.content_type:
            response.content_type = stream_type(data, kind)
        return data

    if inspect.isasyncgen(result):
        async def pieces() -> AsyncIterator[bytes]:
            try:
                async for item in result:
                    yield first_seen(item)
            except ProcessorError:
                raise
            except Exception as exc:
                raise user_error(exc) from None
            finally:
                await result.aclose()

        response.chunks = pieces()
    else:
        def steps() -> Iterator[bytes]:
            try:
                for item in result:
                    yield first_seen(item)
            except ProcessorError:
                raise
            except Exception as exc:
                raise user_error(exc) from None
            finally:
                result.close()

        response.chunks = steps()
    return response
