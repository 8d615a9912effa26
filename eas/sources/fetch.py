"""Model sources: turn a `model_path` / `processor_path` into a local path.

Local files and directories are used in place. https URLs and object storage paths
(`oss://bucket/key`, `s3://bucket/key`, a key ending in `/` for a directory; see
eas/sources/objectstore.py) are downloaded once per node into a cache; an object's
cache entry is keyed by its ETag, so a new upload at the same path is fetched again.
Archives are unpacked by eas/sources/archive.py, which checks every member first.
The same call runs in the controller (to fail fast with a clear reason) and on each
instance (a no-op when this node already has the files).

Bounds: a download stops at `MAX_DOWNLOAD_BYTES` and `DOWNLOAD_TIMEOUT_S` in all (not
per read), redirects are followed at most `MAX_REDIRECTS` times and never down to plain
http. Plain `http://` is refused unless the server opts in (`ALLOW_HTTP_ENV`; loopback
addresses excepted: those bytes never cross a network). With `sha256` (the service
JSON's `model_sha256`) a one-file source is checked before it is unpacked or used.
Every cache entry records a digest of the source it came from and when it was last
used, so `collect_garbage` can remove entries no current service needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator
from urllib.parse import urljoin, urlparse

import httpx

from eas.sources.archive import (MAX_MEMBERS, MAX_UNPACKED_BYTES, ModelSourceError, is_archive, safe_member_path,
                                 unpack)
from eas.sources.redact import install_log_filter, redact_text, redact_url

# httpx logs each request's full URL (credentials included) at INFO.
install_log_filter("httpx")

#: Longest a whole download may take (all its reads); env EAS_DOWNLOAD_TIMEOUT_S.
DOWNLOAD_TIMEOUT_S = float(os.environ.get("EAS_DOWNLOAD_TIMEOUT_S", "600"))
#: Largest download (one file, or all objects of a directory); env EAS_MAX_DOWNLOAD_BYTES.
MAX_DOWNLOAD_BYTES = int(os.environ.get("EAS_MAX_DOWNLOAD_BYTES", str(MAX_UNPACKED_BYTES)))
#: Longest wait for any single read of a download.
READ_TIMEOUT_S = 60.0
MAX_REDIRECTS = 5
#: Set to 1 in eas-server's environment to let plain http:// sources through (it passes it to instances).
ALLOW_HTTP_ENV = "EAS_ALLOW_HTTP_SOURCES"
#: Variables instances on other nodes need for the same rules (the backend passes them on).
ENV_VARS = (ALLOW_HTTP_ENV, "EAS_DOWNLOAD_TIMEOUT_S", "EAS_MAX_DOWNLOAD_BYTES")

_DONE = ".complete"
_SOURCE = ".source"
_DIGEST = ".sha256"


def resolve(source: str | None, cache_dir: str | Path, endpoint: str | None = None,
            sha256: str | None = None) -> str | None:
    """Return a local path for `source`, downloading and unpacking as needed.

    `endpoint` is the service's `oss_endpoint` (object storage paths only); `sha256` the
    expected digest of a one-file source (its bytes as fetched, before any unpacking).
    """
    if not source:
        return None
    expected = sha256.lower() if sha256 else None
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        return str(_fetch_url(source, Path(cache_dir), expected))
    if scheme in ("oss", "s3"):
        return str(_fetch_object(source, Path(cache_dir), endpoint, expected))
    if scheme == "file":
        source = urlparse(source).path
    elif scheme and len(scheme) > 1:
        raise ModelSourceError(f"{redact_url(source)}: unsupported scheme '{scheme}' "
                               "(use https, oss, s3 or a local path)")
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelSourceError(f"{source} does not exist on the server")
    if expected is not None:
        if not path.is_file():
            raise ModelSourceError(f"model_sha256 needs a model_path that is one file; {source} is a directory")
        _check_digest(_file_digest(path), expected, source)
    if path.is_file() and is_archive(path.name):
        def build(tmp: Path) -> Path:
            (tmp / _DIGEST).write_text(_file_digest(path))
            return unpack(path, tmp / "unpacked")

        return str(_cached(Path(cache_dir), _file_key(path), source, build))
    return str(path.resolve())


def plain_http_allowed(url: str) -> bool:
    """https always; http only when the server opted in, or to a loopback address."""
    parts = urlparse(url)
    if parts.scheme.lower() != "http":
        return True
    if os.environ.get(ALLOW_HTTP_ENV, "").lower() in ("1", "true", "yes"):
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]


def source_digest(source: str) -> str:
    """What a cache entry records of the source it came from (never the URL itself:
    it may hold credentials)."""
    return hashlib.sha256(source.encode()).hexdigest()[:32]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(actual: str, expected: str, source: str) -> None:
    if actual != expected:
        raise ModelSourceError(f"{redact_url(source)} does not match model_sha256: its SHA-256 is {actual}, "
                               f"expected {expected}")


def _fetch_url(url: str, cache_dir: Path, expected: str | None) -> Path:
    if not plain_http_allowed(url):
        raise ModelSourceError(f"{redact_url(url)}: plain http model sources are off (the bytes could be "
                               f"changed on the way): use https, or set {ALLOW_HTTP_ENV}=1 in eas-server's "
                               "environment")
    name = PurePosixPath(urlparse(url).path).name or "model"

    def build(tmp: Path) -> Path:
        return _file_or_archive(tmp, name, lambda dest: _download(url, dest), expected)

    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    return _cached(cache_dir, key, url, build, expected)


def _file_or_archive(tmp: Path, name: str, fetch: Callable[[Path], None], expected: str | None) -> Path:
    """Fetch one file into `tmp`; check its digest; an archive is unpacked (safely) and dropped."""
    downloaded = tmp / name
    fetch(downloaded)
    digest = _file_digest(downloaded)
    if expected is not None:
        _check_digest(digest, expected, name)
    (tmp / _DIGEST).write_text(digest)
    if not is_archive(name):
        return downloaded
    target = unpack(downloaded, tmp / "unpacked")
    downloaded.unlink()
    return target


def _fetch_object(source: str, cache_dir: Path, endpoint: str | None, expected: str | None) -> Path:
    """An object, or every object under a prefix, cached under a key made of their ETags."""
    from eas.sources import objectstore

    try:
        url = objectstore.parse(source)
        objects = objectstore.stat(url, endpoint, limit=MAX_MEMBERS)
        where = objectstore.endpoint_url(url.scheme, endpoint) or "aws"
    except objectstore.ObjectStoreError as exc:
        raise ModelSourceError(redact_text(str(exc))) from None
    single = len(objects) == 1 and objects[0].key == url.key
    if len(objects) > MAX_MEMBERS:
        raise ModelSourceError(f"{source} refused: more than {MAX_MEMBERS} objects")
    if sum(o.size for o in objects) > (MAX_DOWNLOAD_BYTES if single else min(MAX_DOWNLOAD_BYTES, MAX_UNPACKED_BYTES)):
        raise ModelSourceError(f"{source} refused: its objects add up to more than {MAX_DOWNLOAD_BYTES} bytes")
    if expected is not None and not single:
        raise ModelSourceError(f"model_sha256 needs a model_path that is one file; {source} is a directory")
    ident = "\n".join([where, url.bucket, url.key, *(f"{o.key}:{o.etag}:{o.size}" for o in objects)])
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S

    def fetch(key: str, dest: Path) -> None:
        try:
            objectstore.download(url, key, dest, endpoint, deadline=deadline)
        except objectstore.ObjectStoreError as exc:
            raise ModelSourceError(redact_text(str(exc))) from None

    def build(tmp: Path) -> Path:
        if single:
            return _file_or_archive(tmp, PurePosixPath(url.key).name, lambda dest: fetch(url.key, dest), expected)
        base = url.key if url.is_prefix else url.key + "/"
        root = tmp / "dir"
        root.mkdir()
        for obj in objects:
            # Keys are names chosen by whoever wrote the bucket: checked like archive members.
            target = safe_member_path(root, obj.key[len(base):], source)
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch(obj.key, target)
        return root

    return _cached(cache_dir, hashlib.sha256(ident.encode()).hexdigest()[:24], source, build, expected)


def _cached(cache_dir: Path, key: str, source: str, build: Callable[[Path], Path],
            expected: str | None = None) -> Path:
    """Build a cache entry once: in a temp dir, then renamed into place, under a lock.

    `build` fills the temp dir and returns the model path inside it; the entry's
    `.complete` marker records where that path landed, so a half-built entry (a crash
    mid-download) is never mistaken for a finished one. A hit refreshes the marker's
    time (what garbage collection reads as "last used").
    """
    entry = cache_dir / key
    done = entry / _DONE
    if done.exists():
        return _hit(entry, expected, source)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"{key}.lock"):
        if done.exists():
            return _hit(entry, expected, source)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}-"))
        try:
            (tmp / _SOURCE).write_text(source_digest(source))
            target = build(tmp)
            shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = entry / target.relative_to(tmp)
        done.write_text(str(final))
        return final


def _hit(entry: Path, expected: str | None, source: str) -> Path:
    done = entry / _DONE
    if expected is not None:
        try:
            recorded = (entry / _DIGEST).read_text().strip()
        except OSError:
            raise ModelSourceError(f"model_sha256 needs a model_path that is one file; {redact_url(source)} "
                                   "is a directory") from None
        _check_digest(recorded, expected, source)
    try:
        os.utime(done)
    except OSError:
        pass
    return Path(done.read_text())


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
    """GET `url` into `dest` within the size and time bounds, following a few redirects."""
    shown = redact_url(url)
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_S
    timeout = httpx.Timeout(min(READ_TIMEOUT_S, DOWNLOAD_TIMEOUT_S))
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout) as client:
            for _ in range(MAX_REDIRECTS + 1):
                with client.stream("GET", url) as resp:
                    if resp.is_redirect and resp.headers.get("location"):
                        url = urljoin(str(resp.url), resp.headers["location"])
                        if not plain_http_allowed(url):
                            raise ModelSourceError(f"download of {shown} refused: it redirects to plain http "
                                                   f"({redact_url(url)})")
                        continue
                    if resp.status_code != 200:
                        raise ModelSourceError(f"download of {shown} failed: HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                        raise ModelSourceError(f"download of {shown} refused: {declared} bytes is more than "
                                               f"{MAX_DOWNLOAD_BYTES}")
                    size = 0
                    with open(dest, "wb") as fh:
                        for chunk in resp.iter_bytes():  # as it arrives: the deadline is checked per read
                            size += len(chunk)
                            if size > MAX_DOWNLOAD_BYTES:
                                raise ModelSourceError(f"download of {shown} refused: more than "
                                                       f"{MAX_DOWNLOAD_BYTES} bytes")
                            if time.monotonic() > deadline:
                                raise ModelSourceError(f"download of {shown} refused: it took longer than "
                                                       f"{DOWNLOAD_TIMEOUT_S:g} s")
                            fh.write(chunk)
                    return
            raise ModelSourceError(f"download of {shown} failed: more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as exc:
        raise ModelSourceError(f"download of {shown} failed: {redact_text(str(exc))}") from None


# -- garbage collection ---------------------------------------------------------------


def collect_garbage(cache_root: str | Path, keep_sources: Iterable[str], max_age_s: float,
                    now: float | None = None) -> list[Path]:
    """Remove cache entries no listed source uses that were last used over `max_age_s` ago.

    `cache_root` holds the per-kind caches (models/, code/, warmup/, mounts/). An entry being built
    or read right now (its lock held) is left alone, as are half-built temp dirs younger
    than the bound. Returns what was removed.
    """
    keep = {source_digest(s) for s in keep_sources if s}
    now = time.time() if now is None else now
    removed: list[Path] = []
    root = Path(cache_root)
    for kind in (root / "models", root / "code", root / "warmup", root / "mounts"):
        if not kind.is_dir():
            continue
        for entry in kind.iterdir():
            if entry.name.endswith(".lock"):
                if not (kind / entry.name[:-5]).exists() and now - _mtime(entry) > max_age_s:
                    entry.unlink(missing_ok=True)
                continue
            if not entry.is_dir():
                continue
            if entry.name.startswith("."):  # a build that never finished (a crash mid-download)
                if now - _mtime(entry) > max_age_s:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
                continue
            try:
                recorded = (entry / _SOURCE).read_text().strip()
            except OSError:
                recorded = ""
            def stale(entry: Path = entry) -> bool:
                return time.time() - _mtime(entry / _DONE, entry) > max_age_s

            if recorded in keep or now - _mtime(entry / _DONE, entry) <= max_age_s:
                continue
            if _remove_unlocked(kind / f"{entry.name}.lock", entry, stale):
                removed.append(entry)
    return removed


def _mtime(path: Path, fallback: Path | None = None) -> float:
    for p in (path, fallback):
        if p is None:
            continue
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _remove_unlocked(lock: Path, entry: Path, stale: Callable[[], bool]) -> bool:
    """Remove `entry` unless someone holds its lock (building it now) or it was used
    since it was judged (a cache hit touches it)."""
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        try:
            if not stale():
                return False
            shutil.rmtree(entry, ignore_errors=True)
            return True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
