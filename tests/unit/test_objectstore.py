"""oss:// and s3:// model paths and `eascmd upload` against a real S3-compatible server.

The server is moto's server mode, a separate process on 127.0.0.1 (tests/support/s3.py);
boto3 talks HTTP to it exactly as it would to OSS or S3.
"""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from eas import sources
from eascmd.cli import cli
from tests.support.s3 import S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    try:
        server.client().create_bucket(Bucket="models")
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    return s3


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_object_is_downloaded_once_and_cached_by_etag(env: S3Server, tmp_path: Path) -> None:
    s3 = env.client()
    s3.put_object(Bucket="models", Key="a/model.bin", Body=b"version one")
    first = Path(sources.resolve("s3://models/a/model.bin", tmp_path))
    assert first.read_bytes() == b"version one"
    inode = first.stat().st_ino
    assert Path(sources.resolve("s3://models/a/model.bin", tmp_path)) == first
    assert first.stat().st_ino == inode, "a cache hit must not download again"

    s3.put_object(Bucket="models", Key="a/model.bin", Body=b"version one")  # same bytes, same ETag
    assert Path(sources.resolve("s3://models/a/model.bin", tmp_path)) == first
    s3.put_object(Bucket="models", Key="a/model.bin", Body=b"version two")  # new content, new entry
    second = Path(sources.resolve("s3://models/a/model.bin", tmp_path))
    assert second != first and second.read_bytes() == b"version two"


def test_oss_archive_with_the_service_endpoint_is_unpacked(env: S3Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env.client().put_object(Bucket="models", Key="b/model.tar.gz",
                            Body=_tar_gz({"m/model.joblib": b"weights", "m/conf.json": b"{}"}))
    monkeypatch.delenv("EAS_OSS_ENDPOINT")
    with pytest.raises(sources.ModelSourceError, match="oss_endpoint"):
        sources.resolve("oss://models/b/model.tar.gz", tmp_path)
    local = Path(sources.resolve("oss://models/b/model.tar.gz", tmp_path, endpoint=env.endpoint))
    assert local.is_dir() and (local / "model.joblib").read_bytes() == b"weights"
    assert sorted(p.name for p in local.iterdir()) == ["conf.json", "model.joblib"]


def test_prefix_is_a_directory_and_keys_cannot_escape(env: S3Server, tmp_path: Path) -> None:
    s3 = env.client()
    s3.put_object(Bucket="models", Key="dir/model.onnx", Body=b"onnx")
    s3.put_object(Bucket="models", Key="dir/sub/vocab.txt", Body=b"a\nb")
    for source in ("oss://models/dir/", "oss://models/dir"):
        local = Path(sources.resolve(source, tmp_path / "c"))
        assert (local / "model.onnx").read_bytes() == b"onnx"
        assert (local / "sub" / "vocab.txt").read_bytes() == b"a\nb"
    s3.put_object(Bucket="models", Key="evil/../../outside.txt", Body=b"x")
    with pytest.raises(sources.ModelSourceError, match="outside"):
        sources.resolve("oss://models/evil/", tmp_path / "d")
    assert not (tmp_path / "outside.txt").exists()


def test_missing_objects_say_so(env: S3Server, tmp_path: Path) -> None:
    with pytest.raises(sources.ModelSourceError, match="does not exist"):
        sources.resolve("s3://models/no/such/model.bin", tmp_path)
    with pytest.raises(sources.ModelSourceError, match="bucket does not exist"):
        sources.resolve("s3://no-such-bucket/model.bin", tmp_path)
    with pytest.raises(sources.ModelSourceError, match="oss://bucket/key"):
        sources.resolve("oss:///model.bin", tmp_path)


def test_instances_starting_together_download_once(env: S3Server, tmp_path: Path) -> None:
    env.client().put_object(Bucket="models", Key="e/model.tar.gz", Body=_tar_gz({"w.bin": b"1" * 100_000}))
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(
        sources.resolve("oss://models/e/model.tar.gz", tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 4 and len(set(results)) == 1
    entries = [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1, f"one cache entry, no leftovers: {entries}"


def test_eascmd_upload_prints_a_path_that_resolves(env: S3Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"trained weights")
    runner = CliRunner()
    missing = runner.invoke(cli, ["upload", str(model)], env={"EAS_OSS_UPLOAD_PATH": ""})
    assert missing.exit_code != 0 and "--to" in missing.output

    monkeypatch.setenv("EAS_OSS_UPLOAD_PATH", "oss://models/uploads")
    result = runner.invoke(cli, ["upload", str(model)])
    assert result.exit_code == 0, result.output
    path = next(line.split("File uploaded: ")[1] for line in result.output.splitlines() if "File uploaded" in line)
    assert path.startswith("oss://models/uploads/") and path.endswith("/model.joblib")
    assert Path(sources.resolve(path, tmp_path / "cache")).read_bytes() == b"trained weights"

    to_s3 = runner.invoke(cli, ["upload", str(model), "--to", "s3://no-such-bucket/x/"])
    assert to_s3.exit_code != 0 and "bucket does not exist" in to_s3.output
