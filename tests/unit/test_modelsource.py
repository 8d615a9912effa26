"""Model sources: local paths, archives unpacked safely, HTTP downloads cached."""

from __future__ import annotations

import functools
import io
import os
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eas import sources as ms


def _tar(path, members):  # members: name -> bytes, or TarInfo customiser
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_local_paths(tmp_path):
    f = tmp_path / "m.pkl"
    f.write_bytes(b"x")
    assert ms.resolve(str(f), tmp_path / "cache") == str(f)
    assert ms.resolve(f"file://{f}", tmp_path / "cache") == str(f)
    assert ms.resolve(None, tmp_path) is None
    with pytest.raises(ms.ModelSourceError, match="does not exist"):
        ms.resolve(str(tmp_path / "nope"), tmp_path / "cache")
    with pytest.raises(ms.ModelSourceError, match="unsupported scheme 'ftp'"):
        ms.resolve("ftp://host/m.tar.gz", tmp_path / "cache")


def test_local_archive_is_unpacked_into_a_lone_top_dir(tmp_path):
    archive = tmp_path / "model.tar.gz"
    _tar(archive, {"model/a.txt": b"A", "model/sub/b.txt": b"B"})
    out = ms.resolve(str(archive), tmp_path / "cache")
    assert open(os.path.join(out, "a.txt")).read() == "A"
    assert ms.resolve(str(archive), tmp_path / "cache") == out, "second call is a cache hit"


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "ok/../../escape.txt"])
def test_tar_members_outside_are_refused(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    _tar(archive, {"fine.txt": b"ok", member: b"pwned"})
    with pytest.raises(ms.ModelSourceError, match="outside its directory"):
        ms.resolve(str(archive), tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    assert not [p for p in (tmp_path / "cache").rglob("fine.txt")], "nothing is unpacked from a refused archive"


def test_tar_links_are_refused(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("model/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ms.ModelSourceError, match="link"):
        ms.resolve(str(archive), tmp_path / "cache")


def test_zip_escape_refused_and_corrupt_archive_reported(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.txt", "pwned")
    with pytest.raises(ms.ModelSourceError, match="outside"):
        ms.resolve(str(evil), tmp_path / "cache")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(ms.ModelSourceError, match="not a readable archive"):
        ms.resolve(str(broken), tmp_path / "cache")


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_download_archive_and_plain_file(http_root, tmp_path):
    root, url = http_root
    _tar(root / "m.tar.gz", {"model.bin": b"weights"})
    (root / "plain.pkl").write_bytes(b"pickle")
    cache = tmp_path / "cache"
    out = ms.resolve(f"{url}/m.tar.gz", cache)
    assert open(os.path.join(out, "model.bin"), "rb").read() == b"weights"
    (root / "m.tar.gz").unlink()
    assert ms.resolve(f"{url}/m.tar.gz", cache) == out, "cached: no second download"
    assert open(ms.resolve(f"{url}/plain.pkl", cache), "rb").read() == b"pickle"
    with pytest.raises(ms.ModelSourceError, match="HTTP 404"):
        ms.resolve(f"{url}/missing.tar.gz", cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "failed downloads leave no temp dirs"
