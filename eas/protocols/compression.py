"""Compressed EAS predict bodies: `metadata.rpc.decompressor`, bounded.

The official SDKs compress a predict body without saying so on the wire: the Go SDK's
`SetCompressType` (Gzip, Zlib), the Java SDK's `setCompressor` (Gzip, Zlib, Snappy, LZ4,
LZ4Frame, Zstd) and the Python SDK's `TorchRequest(True)` (Snappy) send the compressed
bytes with no `Content-Encoding` header, signed as sent. The service says which codec its
callers use (`metadata.rpc.decompressor`, EAS's names below), and the instance
decompresses every predict body before the processor sees it, so the gateway and
DIRECT-mode calls behave the same.

Every codec is decompressed with a ceiling on its output (the instance's body limit,
64 MiB by default): a small body that would expand past it (a decompression bomb) is
refused with 413 as soon as the output passes the limit, never inflated in full. A body
that is not valid data for the codec is a 400 that names the codec.

Framings, as the SDKs write them:

| codec | accepted framing |
|---|---|
| `gzip`, `zlib` | a gzip (RFC 1952) or zlib (RFC 1950) stream, either for either name |
| `snappy` | Snappy's raw block format (a varint length, then the block), as `Snappy.compress` / `snappy.compress` |
| `lz4` | the LZ4 frame format (Java `LZ4Frame`, told by its magic number) or a bare LZ4 block (Java `LZ4`, no length) |
| `zstd` | one Zstandard frame (Java `Zstd.compress`) |
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Callable

#: The codec names `metadata.rpc.decompressor` takes (EAS's; eas/spec checks the same list).
CODECS: tuple[str, ...] = ("gzip", "zlib", "snappy", "lz4", "zstd")
#: Output is produced (and checked against the limit) this many bytes at a time.
CHUNK = 1024 * 1024
#: The LZ4 frame format's magic number, little-endian on the wire.
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
#: At most this many LZ4 sequences are walked to tell a bomb from a corrupt block.
LZ4_WALK_LIMIT = 2_000_000


class DecompressionError(ValueError):
    """Why a compressed body was refused: `status` 413 (over the limit) or 400 (not that codec)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _too_large(codec: str, limit: int) -> DecompressionError:
    return DecompressionError(413, f"the {codec}-compressed request body decompresses to more than "
                                   f"{limit} bytes, this service's request body limit")


def _invalid(codec: str, why: object) -> DecompressionError:
    return DecompressionError(400, f"request body is not valid {codec} data (metadata.rpc.decompressor is "
                                   f"{codec!r}, so every predict body must be compressed with it): {why}")


def _deflate(codec: str, data: bytes, limit: int) -> bytes:
    """gzip or zlib, told apart by their headers (zlib's `wbits` 32 + 15), a CHUNK at a time."""
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, CHUNK)
            out += chunk
            if len(out) > limit:
                raise _too_large(codec, limit)
            pending = inflater.unconsumed_tail
            if not pending and not chunk and not inflater.eof:  # no input left, no progress
                raise _invalid(codec, "the stream is truncated")
    except zlib.error as exc:
        raise _invalid(codec, exc) from None
    if inflater.unused_data:
        raise _invalid(codec, f"{len(inflater.unused_data)} bytes follow the end of the stream")
    return bytes(out)


def _snappy(data: bytes, limit: int) -> bytes:
    """Snappy's raw format starts with the uncompressed length (a varint): checked first."""
    import cramjam

    length, shift = 0, 0
    for i, byte in enumerate(data[:5]):
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
        if i == 4:
            raise _invalid("snappy", "the length preamble is not a valid varint")
    else:
        raise _invalid("snappy", "the length preamble is truncated")
    if length > limit:
        raise _too_large("snappy", limit)
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise _invalid("snappy", exc) from None


def _lz4_block_size(data: bytes, limit: int) -> int | None:
    """The size a bare LZ4 block decompresses to, read from its sequences without
    decompressing; stops as soon as it passes `limit`. None: not a well-formed block."""
    i, n, total, sequences = 0, len(data), 0, 0
    while i < n:
        sequences += 1
        if sequences > LZ4_WALK_LIMIT:
            return None
        token = data[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                if i >= n:
                    return None
                extra = data[i]
                i += 1
                literals += extra
                if extra != 255:
                    break
        i += literals
        total += literals
        if i == n:  # the last sequence is literals only
            return total
        if i + 2 > n:
            return None
        i += 2  # the match offset
        match = token & 15
        if match == 15:
            while True:
                if i >= n:
                    return None
                extra = data[i]
                i += 1
                match += extra
                if extra != 255:
                    break
        total += match + 4
        if total > limit:
            return total
    return None


def _lz4(data: bytes, limit: int) -> bytes:
    import lz4.block
    import lz4.frame

    if data[:4] == LZ4_FRAME_MAGIC:
        inflater = lz4.frame.LZ4FrameDecompressor()
        out = bytearray()
        pending = data
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, max_length=CHUNK)
                out += chunk
                if len(out) > limit:
                    raise _too_large("lz4", limit)
                pending = b""  # the rest of the input waits inside the decompressor
                if not inflater.eof and (inflater.needs_input or not chunk):
                    raise _invalid("lz4", "the LZ4 frame is truncated")
        except RuntimeError as exc:  # lz4.frame reports bad data as RuntimeError
            raise _invalid("lz4", exc) from None
        if inflater.unused_data:
            raise _invalid("lz4", f"{len(inflater.unused_data)} bytes follow the end of the LZ4 frame")
        return bytes(out)
    # A bare block carries no length: decompress into a buffer one byte over the limit.
    try:
        out = lz4.block.decompress(data, uncompressed_size=limit + 1)
    except lz4.block.LZ4BlockError:
        size = _lz4_block_size(data, limit)
        if size is not None and size > limit:
            raise _too_large("lz4", limit) from None
        raise _invalid("lz4", "neither an LZ4 frame nor a well-formed LZ4 block") from None
    if len(out) > limit:
        raise _too_large("lz4", limit)
    return out


def _zstd(data: bytes, limit: int) -> bytes:
    """One frame. The Java SDK's frames declare their size (checked before anything is
    decompressed); one that does not is decompressed into a buffer one byte over the
    limit, and only if that fails is it counted, to tell a bomb from bad data."""
    import io

    import zstandard

    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise _invalid("zstd", exc) from None
    if declared > limit:  # -1: the frame does not say
        raise _too_large("zstd", limit)
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=limit + 1)
    except zstandard.ZstdError as exc:
        if declared < 0:
            produced = 0
            try:
                with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                    while produced <= limit and (chunk := reader.read(CHUNK)):
                        produced += len(chunk)
            except zstandard.ZstdError:
                pass
            if produced > limit:
                raise _too_large("zstd", limit) from None
        raise _invalid("zstd", exc) from None
    if len(out) > limit:
        raise _too_large("zstd", limit)
    return out


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": lambda data, limit: _deflate("gzip", data, limit),
    "zlib": lambda data, limit: _deflate("zlib", data, limit),
    "snappy": _snappy,
    "lz4": _lz4,
    "zstd": _zstd,
}


def decompress(codec: str, data: bytes, limit: int) -> bytes:
    """`data` decompressed with `codec` (one of CODECS), at most `limit` bytes of it.

    Raises DecompressionError: 413 when the output would pass `limit`, 400 when `data`
    is not valid for the codec. An empty body stays empty (the Java SDK sends an empty
    body uncompressed).
    """
    decoder = _DECODERS.get(codec)
    if decoder is None:
        raise ValueError(f"unknown decompressor {codec!r}: use one of {', '.join(CODECS)}")
    if not data:
        return b""
    return decoder(data, limit)


async def decompress_async(codec: str, data: bytes, limit: int) -> bytes:
    """`decompress` on a worker thread: inflating up to the limit takes tens of
    milliseconds, which must not stall an instance's event loop."""
    return await asyncio.to_thread(decompress, codec, data, limit)
