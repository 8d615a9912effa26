"""Model sources within bounds: archives, downloads, plain http, digests, the cache's size.

- Archives: at most N members, M bytes, T seconds, unpacked in a child process with an
  address-space limit (a multi-hundred-megabyte tar header cannot OOM the server).
- Downloads: total size and total time bounded (not per read), redirects few and never
  down to plain http; plain http only with the server's opt-in (loopback excepted).
- `model_sha256`: checked before anything is unpacked or loaded.
- The model cache: entries no current service version uses and not used for a while go.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from eas import sources
from eas.sources import archive, fetch
from eas.spec import SpecError, parse
from tests.support.platform import Harness, api_fixture  # noqa: F401


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pax_bomb(path: Path, header_bytes: int) -> Path:
    """A small .tar.gz whose first member's pax header (its path) is `header_bytes` long:
    tarfile reads a header whole into memory, whatever its size."""
    value = header_bytes - 64
    body_len = len(" path=\n") + value
    length = body_len + len(str(body_len))
    length = body_len + len(str(length))
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = length
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        gz.write(f"{length} path=".encode())
        chunk = b"a" * (1 << 20)
        left = value
        while left > 0:
            gz.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
        gz.write(b"\n" + b"\0" * ((512 - length % 512) % 512))
        member = tarfile.TarInfo("x")
        member.size = 1
        gz.write(member.tobuf(format=tarfile.USTAR_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024)
    return path


# -- archives ---------------------------------------------------------------------------------------


def test_archive_member_count_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 10)
    many = {f"m/f{i}.txt": b"x" for i in range(11)}
    with pytest.raises(sources.ModelSourceError, match="more than 10 members"):
        archive.unpack(_tar(tmp_path / "many.tar.gz", many), tmp_path / "out1")
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as zf:
        for name in many:
            zf.writestr(name, "x")
    with pytest.raises(sources.ModelSourceError, match="more than 10 members"):
        archive.unpack(tmp_path / "many.zip", tmp_path / "out2")
    ten = dict(list(many.items())[:10])
    out = archive.unpack(_tar(tmp_path / "ten.tar.gz", ten), tmp_path / "out3")
    assert len(list(out.iterdir())) == 10


def test_archive_size_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(sources.ModelSourceError, match="more than 1000 bytes"):
        archive.unpack(_tar(tmp_path / "big.tar.gz", {"a": b"0" * 600, "b": b"0" * 600}), tmp_path / "out")


def test_unpacking_cannot_exhaust_the_servers_memory(tmp_path: Path) -> None:
    """A 1.3 MB .tar.gz whose header unpacks to 300 MB in memory: refused by the bounded
    child (here 128 MiB of address space), while this process never holds it."""
    bomb = _pax_bomb(tmp_path / "bomb.tar.gz", 300 * 1024 * 1024)
    assert bomb.stat().st_size < 5 * 1024 * 1024
    started = time.monotonic()
    with pytest.raises(sources.ModelSourceError, match="needs more than 134217728 bytes of memory"):
        archive.unpack(bomb, tmp_path / "out", memory_bytes=128 * 1024 * 1024)
    assert time.monotonic() - started < 30
    assert not list((tmp_path / "out").iterdir()), "nothing was written"


def test_unpacking_time_is_bounded(tmp_path: Path) -> None:
    model = _tar(tmp_path / "m.tar.gz", {"m/a": b"A", "m/b": b"B"})
    with pytest.raises(sources.ModelSourceError, match="took"):
        archive.unpack(model, tmp_path / "out", timeout_s=0)


def test_a_hung_unpack_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's own clock: a child that never finishes (here: one that reads a fifo
    nobody writes) is killed after the bound plus a grace period."""
    fifo = tmp_path / "never.tar"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(sources.ModelSourceError, match="longer than"):
        archive.unpack(fifo, tmp_path / "out", timeout_s=0.5)
    assert time.monotonic() - started < 15


# -- downloads ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict[str, Any] = {}

    def do_GET(self) -> None:  # noqa: N802
        action = _Handler.routes.get(self.path.split("?")[0])
        if action is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        action(self)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, dict[str, Any]]]:
    _Handler.routes = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.routes
    httpd.shutdown()
    httpd.server_close()


def _body(data: bytes, length: bool = True):  # noqa: ANN202
    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(len(data)))
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        if length:
            h.wfile.write(data)
        else:
            for i in range(0, len(data), 65536):
                part = data[i:i + 65536]
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
    return send


def _drip(h: BaseHTTPRequestHandler) -> None:
    """Sends a byte every 0.2 s for a minute: each read is quick, the whole is not."""
    h.send_response(200)
    h.send_header("Content-Length", "300")
    h.end_headers()
    try:
        for _ in range(300):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass


def _redirect(to: str):  # noqa: ANN202
    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return send


def test_download_size_is_bounded_declared_or_not(web: tuple[str, dict[str, Any]], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url, routes = web
    monkeypatch.setattr(fetch, "MAX_DOWNLOAD_BYTES", 100_000)
    routes["/declared.pkl"] = _body(b"x" * 200_000)
    routes["/chunked.pkl"] = _body(b"x" * 200_000, length=False)
    routes["/fits.pkl"] = _body(b"x" * 1000, length=False)
    with pytest.raises(sources.ModelSourceError, match="200000 bytes is more than 100000"):
        sources.resolve(f"{url}/declared.pkl", tmp_path)
    with pytest.raises(sources.ModelSourceError, match="more than 100000 bytes"):
        sources.resolve(f"{url}/chunked.pkl", tmp_path)
    assert Path(sources.resolve(f"{url}/fits.pkl", tmp_path)).read_bytes() == b"x" * 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "refused downloads leave nothing"


def test_download_time_is_bounded_in_all(web: tuple[str, dict[str, Any]], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url, routes = web
    monkeypatch.setattr(fetch, "DOWNLOAD_TIMEOUT_S", 1.0)
    routes["/slow.pkl"] = _drip
    started = time.monotonic()
    with pytest.raises(sources.ModelSourceError, match="took longer than 1 s"):
        sources.resolve(f"{url}/slow.pkl", tmp_path)
    assert time.monotonic() - started < 10


def test_redirects_are_few_and_never_down_to_plain_http(web: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, routes = web
    routes["/m.pkl"] = _body(b"model")
    routes["/hop"] = _redirect("/m.pkl")
    routes["/loop"] = _redirect("/loop")
    routes["/away"] = _redirect("http://models.example/m.pkl")
    assert Path(sources.resolve(f"{url}/hop", tmp_path)).read_bytes() == b"model"
    with pytest.raises(sources.ModelSourceError, match="more than 5 redirects"):
        sources.resolve(f"{url}/loop", tmp_path)
    with pytest.raises(sources.ModelSourceError, match="redirects to plain http"):
        sources.resolve(f"{url}/away", tmp_path)


def test_plain_http_needs_an_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EAS_ALLOW_HTTP_SOURCES", raising=False)
    with pytest.raises(sources.ModelSourceError, match="plain http model sources are off"):
        sources.resolve("http://models.example/m.pkl", tmp_path)
    assert sources.plain_http_allowed("https://models.example/m.pkl")
    assert sources.plain_http_allowed("http://127.0.0.1:9/m.pkl") and sources.plain_http_allowed("http://[::1]/m")
    assert sources.plain_http_allowed("http://localhost/m.pkl")
    assert not sources.plain_http_allowed("http://10.0.0.1/m.pkl")
    monkeypatch.setenv("EAS_ALLOW_HTTP_SOURCES", "1")
    assert sources.plain_http_allowed("http://models.example/m.pkl")


# -- model_sha256 ---------------------------------------------------------------------------------


def test_model_sha256_is_validated_in_the_spec() -> None:
    ok = parse({"name": "s", "processor": "sklearn", "model_sha256": "AB" * 32, "metadata": {"instance": 1}})
    assert ok.model_sha256 == "ab" * 32
    for bad in ("abc", "g" * 64, "a" * 65):
        with pytest.raises(SpecError, match="model_sha256"):
            parse({"name": "s", "processor": "sklearn", "model_sha256": bad, "metadata": {"instance": 1}})


def test_model_sha256_is_checked_before_use(web: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, routes = web
    good = _tar(tmp_path / "m.tar.gz", {"m/model.bin": b"weights"})
    data = good.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    routes["/m.tar.gz"] = _body(data)
    cache = tmp_path / "cache"
    with pytest.raises(sources.ModelSourceError, match="does not match model_sha256"):
        sources.resolve(f"{url}/m.tar.gz", cache, sha256="0" * 64)
    assert not list(cache.glob("*/.complete")), "a wrong digest leaves no cache entry"
    out = sources.resolve(f"{url}/m.tar.gz", cache, sha256=digest)
    assert (Path(out) / "model.bin").read_bytes() == b"weights"
    # A cached entry is checked too (it records the digest of what was fetched).
    with pytest.raises(sources.ModelSourceError, match="does not match model_sha256"):
        sources.resolve(f"{url}/m.tar.gz", cache, sha256="1" * 64)
    assert sources.resolve(f"{url}/m.tar.gz", cache) == out
    # Local files: the file itself; a directory has no one digest.
    assert sources.resolve(str(good), cache, sha256=digest)
    with pytest.raises(sources.ModelSourceError, match="does not match"):
        sources.resolve(str(good), cache, sha256="2" * 64)
    with pytest.raises(sources.ModelSourceError, match="needs a model_path that is one file"):
        sources.resolve(str(tmp_path), cache, sha256=digest)


def test_a_service_with_the_wrong_digest_fails_with_the_reason(api: Harness, tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"not the model you think")
    right = hashlib.sha256(model.read_bytes()).hexdigest()
    api.create({"name": "pinned", "processor": "sklearn", "model_path": str(model), "model_sha256": "f" * 64,
                "metadata": {"instance": 1}})
    api.reconcile_until(lambda: api.status("pinned") == "Failed", "the digest check to fail the service")
    assert "does not match model_sha256" in api.describe("pinned")["Message"]
    api.ok("PUT", api.svc("pinned"), {"model_sha256": right})
    api.reconcile_until(lambda: api.status("pinned") == "Running", "the right digest to deploy")
    assert api.store.latest_version("pinned") == 2, "a new digest is a new version"


# -- the model cache ---------------------------------------------------------------------------------


def test_cache_garbage_collection(web: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, routes = web
    for name in ("kept", "old", "recent"):
        routes[f"/{name}.pkl"] = _body(name.encode())
    cache = tmp_path / "cache"
    paths = {name: Path(sources.resolve(f"{url}/{name}.pkl", cache / "models")) for name in ("kept", "old", "recent")}
    long_ago = time.time() - 7200
    for name in ("kept", "old"):
        os.utime(paths[name].parent / ".complete", (long_ago, long_ago))
    crashed = cache / "models" / ".deadbeef-half"
    crashed.mkdir()
    os.utime(crashed, (long_ago, long_ago))

    removed = sources.collect_garbage(cache, [f"{url}/kept.pkl"], max_age_s=3600)
    assert {p.name for p in removed} == {paths["old"].parent.name, crashed.name}
    assert paths["kept"].exists() and paths["recent"].exists() and not paths["old"].exists()
    # A hit counts as a use: the entry is young again.
    os.utime(paths["recent"].parent / ".complete", (long_ago, long_ago))
    sources.resolve(f"{url}/recent.pkl", cache / "models")
    assert sources.collect_garbage(cache, [], max_age_s=3600) == [paths["kept"].parent]
    assert paths["recent"].exists()


def test_cache_entries_in_use_are_left_alone(web: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, routes = web
    routes["/busy.pkl"] = _body(b"busy")
    cache = tmp_path / "cache"
    path = Path(sources.resolve(f"{url}/busy.pkl", cache / "models"))
    os.utime(path.parent / ".complete", (0, 0))
    with fetch._locked(cache / "models" / f"{path.parent.name}.lock"):  # someone reads or builds it now
        assert sources.collect_garbage(cache, [], max_age_s=1) == []
    assert sources.collect_garbage(cache, [], max_age_s=1) == [path.parent]


def test_the_controller_collects_the_cache_of_deleted_services(api: Harness, web: tuple[str, dict[str, Any]]) -> None:
    url, routes = web
    for name in ("one", "two"):
        routes[f"/{name}.pkl"] = _body(name.encode())
        api.create({"name": name, "processor": "sklearn", "model_path": f"{url}/{name}.pkl",
                    "metadata": {"instance": 1}})
    api.settle()
    models = api.data_dir / "cache" / "models"
    entries = {p.name for p in models.iterdir() if p.is_dir()}
    assert len(entries) == 2
    api.ok("DELETE", api.svc("two"))
    api.reconcile_until(lambda: api.status("two") is None, "two to be removed")
    controller = api.controller
    controller.cache_max_age_s = 0
    controller.cache_gc_interval_s = 0
    controller._next_gc = 0
    api.reconcile_until(lambda: len([p for p in models.iterdir() if p.is_dir()]) == 1, "the unused entry to go")
    assert Path(sources.resolve(f"{url}/one.pkl", models)).read_bytes() == b"one", "the used one stays"
