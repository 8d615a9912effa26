"""Compressed predict bodies (`metadata.rpc.decompressor`): every codec the SDKs send,
bounded output (a bomb is a 413 before it is inflated), clear 400s for bad data, and the
instance decompressing before the processor on both paths."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import cramjam
import lz4.block
import lz4.frame
import pytest
import zstandard

from eas.protocols import compression
from eas.protocols.compression import CODECS, DecompressionError, decompress
from eas.spec.service import RpcConfig

LIMIT = 1 << 20
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}' * 200


def compressors() -> dict[str, tuple[str, bytes]]:
    """What each SDK compressor puts on the wire for BODY: (codec name, bytes)."""
    return {
        "Go/Java Gzip": ("gzip", gzip.compress(BODY)),
        "Go/Java Zlib": ("zlib", zlib.compress(BODY)),
        "Java Snappy, Python TorchRequest(True)": ("snappy", bytes(cramjam.snappy.compress_raw(BODY))),
        "Java LZ4 (bare block)": ("lz4", lz4.block.compress(BODY, store_size=False)),
        "Java LZ4Frame": ("lz4", lz4.frame.compress(BODY, block_size=lz4.frame.BLOCKSIZE_MAX64KB,
                                                    content_checksum=True, block_checksum=True)),
        "Java Zstd": ("zstd", zstandard.ZstdCompressor().compress(BODY)),
        "zstd without a content size": ("zstd", zstandard.ZstdCompressor(write_content_size=False).compress(BODY)),
    }


@pytest.mark.parametrize("sdk", list(compressors()))
def test_every_sdk_codec_round_trips(sdk: str) -> None:
    codec, data = compressors()[sdk]
    assert decompress(codec, data, LIMIT) == BODY


def test_gzip_and_zlib_are_read_under_either_name() -> None:
    assert decompress("gzip", zlib.compress(BODY), LIMIT) == decompress("zlib", gzip.compress(BODY), LIMIT) == BODY


def bombs() -> dict[str, tuple[str, bytes]]:
    zeros = b"\0" * (LIMIT * 8)
    return {
        "gzip": ("gzip", gzip.compress(zeros)),
        "zlib": ("zlib", zlib.compress(zeros)),
        "snappy": ("snappy", bytes(cramjam.snappy.compress_raw(zeros))),
        "lz4 block": ("lz4", lz4.block.compress(zeros, store_size=False)),
        "lz4 frame": ("lz4", lz4.frame.compress(zeros)),
        "zstd": ("zstd", zstandard.ZstdCompressor().compress(zeros)),
        "zstd, size unsaid": ("zstd", zstandard.ZstdCompressor(write_content_size=False).compress(zeros)),
    }


@pytest.mark.parametrize("name", list(bombs()))
def test_a_bomb_is_413(name: str) -> None:
    codec, data = bombs()[name]
    assert len(data) < LIMIT // 2  # under the limit on the wire, 8x the limit inflated
    with pytest.raises(DecompressionError, match=f"decompresses to more than {LIMIT} bytes") as info:
        decompress(codec, data, LIMIT)
    assert info.value.status == 413


@pytest.mark.parametrize("codec", CODECS)
def test_exactly_the_limit_passes(codec: str) -> None:
    data = b"a" * LIMIT
    packed = {"gzip": gzip.compress, "zlib": zlib.compress, "zstd": zstandard.ZstdCompressor().compress,
              "snappy": lambda d: bytes(cramjam.snappy.compress_raw(d)),
              "lz4": lambda d: lz4.block.compress(d, store_size=False)}[codec](data)
    assert decompress(codec, packed, LIMIT) == data
    with pytest.raises(DecompressionError) as info:
        decompress(codec, packed, LIMIT - 1)
    assert info.value.status == 413


@pytest.mark.parametrize("codec", CODECS)
def test_bad_data_is_400_naming_the_codec(codec: str) -> None:
    good = {"gzip": gzip.compress, "zlib": zlib.compress, "zstd": zstandard.ZstdCompressor().compress,
            "snappy": lambda d: bytes(cramjam.snappy.compress_raw(d)), "lz4": lz4.frame.compress}[codec](BODY)
    for bad in (b"plain text, never compressed", good[: len(good) // 2]):
        with pytest.raises(DecompressionError, match=f"not valid {codec} data") as info:
            decompress(codec, bad, LIMIT)
        assert info.value.status == 400
        assert "metadata.rpc.decompressor" in str(info.value)


def test_trailing_bytes_after_the_stream_are_refused() -> None:
    with pytest.raises(DecompressionError, match="follow the end"):
        decompress("gzip", gzip.compress(BODY) + b"junk", LIMIT)


def test_an_empty_body_stays_empty() -> None:
    assert all(decompress(codec, b"", LIMIT) == b"" for codec in CODECS)


def test_the_lz4_block_walk_reads_the_size_without_decompressing() -> None:
    for data in (b"", b"x", BODY, bytes(range(256)) * 50, b"\0" * 5000):
        block = lz4.block.compress(data, store_size=False)
        assert compression._lz4_block_size(block, 10**9) == len(data)
    assert compression._lz4_block_size(b"\xff", 10**9) is None


def test_decompressing_runs_off_the_event_loop() -> None:
    codec, data = compressors()["Go/Java Gzip"]
    assert asyncio.run(compression.decompress_async(codec, data, LIMIT)) == BODY


def test_the_service_json_takes_the_same_codecs() -> None:
    """eas/spec cannot import eas/protocols (sibling layers): the two lists must agree."""
    for codec in CODECS:
        assert RpcConfig(decompressor=codec.upper()).decompressor == codec
    assert RpcConfig().decompressor is None
    with pytest.raises(ValueError, match="decompressor 'brotli' is not supported: use one of gzip, zlib, snappy"):
        RpcConfig(decompressor="brotli")
    with pytest.raises(ValueError):
        decompress("brotli", b"x", LIMIT)


# -- on an instance: after the signature, before the processor -------------------------------

ECHO = """
class Echo:
    def initialize(self):
        pass
    def process(self, data):
        return data, 200
"""


@pytest.fixture(scope="module")
def gzip_instance(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from eas.instance.core import Credentials, InstanceApp
    from eas.instance.runtime import ServiceRuntime

    code = tmp_path_factory.mktemp("code")
    (code / "app.py").write_text(ECHO)
    runtime = ServiceRuntime({"name": "zipped", "processor_type": "python", "processor_path": str(code),
                              "metadata": {"instance": 1, "rpc": {"decompressor": "gzip"}}},
                             str(tmp_path_factory.mktemp("cache")))
    yield InstanceApp(runtime, "zipped-1", Credentials("tok", "key"), max_body_bytes=LIMIT)
    runtime.close()


def _call(body: bytes, kind: str = "predict", signed: bool = True):  # noqa: ANN202
    from starlette.datastructures import Headers

    from eas.instance.core import Call
    from eas.protocols.auth import sign_headers

    headers = sign_headers("tok", "/api/predict/zipped", body) if signed else {"X-Eas-Internal-Key": "key"}
    return Call("zipped", kind, body, Headers(headers), "/api/predict/zipped", "rid")  # type: ignore[arg-type]


def test_the_instance_decompresses_a_signed_body_before_the_processor(gzip_instance) -> None:  # noqa: ANN001
    """The SDKs sign the compressed bytes: the MD5 check passes on them, the processor sees the plain ones."""
    for signed in (True, False):  # DIRECT (signed by the SDK) and from the gateway (internal key)
        answer = asyncio.run(gzip_instance.handle(_call(gzip.compress(BODY), signed=signed)))
        assert (answer.status, answer.body) == (200, BODY)


def test_the_instance_answers_a_bomb_413_and_bad_data_400(gzip_instance) -> None:  # noqa: ANN001
    bomb = asyncio.run(gzip_instance.handle(_call(gzip.compress(b"\0" * (LIMIT * 4)))))
    assert bomb.status == 413 and b"decompresses to more than" in bomb.body
    plain = asyncio.run(gzip_instance.handle(_call(b"not gzip at all")))
    assert plain.status == 400 and b"not valid gzip data" in plain.body
    assert gzip_instance.in_flight == 0
