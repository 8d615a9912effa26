"""Model sources: turn a `model_path` / `processor_path` into a local path.

Local files and directories are used in place. http(s) URLs and object storage paths
(`oss://bucket/key`, `s3://bucket/key`, a key ending in `/` for a directory; see
eas/sources/objectstore.py) are downloaded once per node into a cache; an object's
cache entry is keyed by its ETag, so a new upload at the same path is fetched again.
Archives are unpacked by eas/sources/archive.py, which checks every member first.
The same call runs in the controller (to fail fast with a clear reason) and on each
instance (a no-op when this node already has the files).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import urlparse

import httpx

from eas.sources.archive import MAX_UNPACKED_BYTES, ModelSourceError, is_archive, safe_member_path, unpack

DOWNLOAD_TIMEOUT_S = float(os.environ.get("EAS_DOWNLOAD_TIMEOUT_S", "600"))


def resolve(source: str | None, cache_dir: str | Path, endpoint: str | None = None) -> str | None:
    """Return a local path for `source`, downloading and unpacking as needed.

    `endpoint` is the service's `oss_endpoint` (object storage paths only).
    """
    if not source:
        return None
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        return str(_fetch_url(source, Path(cache_dir)))
    if scheme in ("oss", "s3"):
        return str(_fetch_object(source, Path(cache_dir), endpoint))
    if scheme == "file":
        source = urlparse(source).path
    elif scheme and len(scheme) > 1:
        raise ModelSourceError(f"{source}: unsupported scheme '{scheme}' (use http, https, oss, s3 or a local path)")
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelSourceError(f"{source} does not exist on the server")
    if path.is_file() and is_archive(path.name):
        return str(_cached(Path(cache_dir), _file_key(path), lambda tmp: unpack(path, tmp / "unpacked")))
    return str(path.resolve())


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]


def _fetch_url(url: str, cache_dir: Path) -> Path:
    name = PurePosixPath(urlparse(url).path).name or "model"

    def build(tmp: Path) -> Path:
        return _file_or_archive(tmp, name, lambda dest: _download(url, dest))

    return _cached(cache_dir, hashlib.sha256(url.encode()).hexdigest()[:24], build)


def _file_or_archive(tmp: Path, name: str, fetch: Callable[[Path], None]) -> Path:
    """Fetch one file into `tmp`; an archive is unpacked (safely) and the archive dropped."""
    downloaded = tmp / name
    fetch(downloaded)
    if not is_archive(name):
        return downloaded
    target = unpack(downloaded, tmp / "unpacked")
    downloaded.unlink()
    return target


def _fetch_object(source: str, cache_dir: Path, endpoint: str | None) -> Path:
    """An object, or every object under a prefix, cached under a key made of their ETags."""
    from eas.sources import objectstore

    try:
        url = objectstore.parse(source)
        objects = objectstore.stat(url, endpoint)
        where = objectstore.endpoint_url(url.scheme, endpoint) or "aws"
    except objectstore.ObjectStoreError as exc:
        raise ModelSourceError(str(exc)) from None
    single = len(objects) == 1 and objects[0].key == url.key
    if not single and sum(o.size for o in objects) > MAX_UNPACKED_BYTES:
        raise ModelSourceError(f"{source} refused: its objects add up to more than {MAX_UNPACKED_BYTES} bytes")
    ident = "\n".join([where, url.bucket, url.key, *(f"{o.key}:{o.etag}:{o.size}" for o in objects)])

    def fetch(key: str, dest: Path) -> None:
        try:
            objectstore.download(url, key, dest, endpoint)
        except objectstore.ObjectStoreError as exc:
            raise ModelSourceError(str(exc)) from None

    def build(tmp: Path) -> Path:
        if single:
            return _file_or_archive(tmp, PurePosixPath(url.key).name, lambda dest: fetch(url.key, dest))
        base = url.key if url.is_prefix else url.key + "/"
        root = tmp / "dir"
        root.mkdir()
        for obj in objects:
            # Keys are names chosen by whoever wrote the bucket: checked like archive members.
            target = safe_member_path(root, obj.key[len(base):], source)
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch(obj.key, target)
        return root

    return _cached(cache_dir, hashlib.sha256(ident.encode()).hexdigest()[:24], build)


def _cached(cache_dir: Path, key: str, build: Callable[[Path], Path]) -> Path:
    """Build a cache entry once: in a temp dir, then renamed into place, under a lock.

    `build` fills the temp dir and returns the model path inside it; the entry's
    `.complete` marker records where that path landed, so a half-built entry (a crash
    mid-download) is never mistaken for a finished one.
    """
    entry = cache_dir / key
    done = entry / ".complete"
    if done.exists():
        return Path(done.read_text())
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"{key}.lock"):
        if done.exists():
            return Path(done.read_text())
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}-"))
        try:
            target = build(tmp)
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = entry / target.relative_to(tmp)
        done.write_text(str(final))
        return final


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One download per URL per node even when several instances start at once."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(url: str, dest: Path) -> None:
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            if resp.status_code != 200:
                raise ModelSourceError(f"download of {url} failed: HTTP {resp.status_code}")
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise ModelSourceError(f"download of {url} failed: {exc}") from None
