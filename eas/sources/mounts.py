"""Storage mounts (`storage[]` of the service JSON) made real on a node.

EAS mounts storage into an instance's container at `mount_path`. Instances here are
processes on Ray nodes, not containers, so each mount is prepared as a local directory
on the node and `mount_path` is mapped to it: `model_path`, `processor_path` and
`warm_up_data_path` may name a path under a mount_path (`Mounts.local` translates
them), and processors get the whole map (Python code reads `self.mounts`).

| kind | prepared as |
|---|---|
| `oss` (oss:// or s3://) | the prefix synced into the node's cache (fetch.py: ETags decide what is fetched again) |
| `nfs` | a path on the node: `path` itself, or `$EAS_NFS_ROOT/<server><path>` when `server` is given (operators mount the export there on every node) |
| `git` | a clone of `repo` at `branch` (or `commit`), fetched again when the branch moved |
| `empty_dir` | a fresh directory per instance, removed when it stops (`medium: memory`: in /dev/shm) |
| `empty_dir` at `/dev/shm`, `metadata.shm_size` | a check that the node's /dev/shm is that large |
| `image` | refused: copying files out of an image needs containers |

The same call runs in the controller (`scratch=False`: shared mounts are fetched and
checked, nothing per instance is made), so a mount that cannot be made fails the
service in a second with the reason, and on each instance's node before it loads.
Works on plain dicts (the stored service JSON): this layer does not import eas.spec.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from eas.sources.archive import ModelSourceError
from eas.sources.fetch import DOWNLOAD_TIMEOUT_S, _cached, plain_http_allowed, resolve
from eas.sources.redact import redact_text, redact_url

#: Where operators mount NFS exports on every node: `$EAS_NFS_ROOT/<server><path>`.
NFS_ROOT_ENV = "EAS_NFS_ROOT"
SHM = "/dev/shm"
GB = 1024**3
#: Variables instances on other nodes need to find the same mounts (the backend passes them on).
ENV_VARS = (NFS_ROOT_ENV,)


@dataclass
class Mounts:
    """mount_path -> local directory on this node, and the per-instance scratch to remove."""

    paths: dict[str, str] = field(default_factory=dict)
    scratch: list[str] = field(default_factory=list)

    def local(self, path: str | None) -> str | None:
        """`path` with a mount_path prefix replaced by its local directory; other paths
        (URLs, paths outside every mount) as given."""
        if not path or not self.paths:
            return path
        plain = path[len("file://"):] if path.startswith("file://") else path
        if not plain.startswith("/"):
            return path
        normal = posixpath.normpath(plain)
        for target in sorted(self.paths, key=len, reverse=True):
            if normal == target or normal.startswith(target.rstrip("/") + "/"):
                return self.paths[target] + normal[len(target.rstrip("/")):]
        return path

    def close(self) -> None:
        """Remove what was made for this instance only (empty_dir)."""
        for directory in self.scratch:
            shutil.rmtree(directory, ignore_errors=True)
        self.scratch.clear()


def prepare(storage: Iterable[Mapping[str, Any]] | None, cache_dir: str | Path, endpoint: str | None = None,
            *, shm_gb: int | None = None, scratch: bool = True) -> Mounts:
    """Make every mount of a service available on this node (or check that it can be).

    Raises ModelSourceError naming the entry (`storage[i] (/mnt/data)`) and why. With
    `scratch=False` (the controller) per-instance directories are checked, not made.
    """
    mounts = Mounts()
    try:
        if shm_gb:
            _check_space(SHM, shm_gb, "metadata.shm_size")
        for i, entry in enumerate(storage or ()):
            where = f"storage[{i}] ({entry.get('mount_path')})"
            target = posixpath.normpath(str(entry.get("mount_path")))
            try:
                local = _prepare_one(entry, target, Path(cache_dir) / "mounts", endpoint, scratch, mounts)
            except ModelSourceError as exc:
                raise ModelSourceError(f"{where}: {exc}") from None
            if local is not None:
                mounts.paths[target] = local
    except BaseException:
        mounts.close()
        raise
    return mounts


def sources(storage: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """What the node cache holds for these mounts (object prefixes, git repositories):
    the entries cache garbage collection must keep."""
    out = []
    for entry in storage or ():
        if isinstance(entry.get("oss"), Mapping):
            out.append(str(entry["oss"].get("path")))
        if isinstance(entry.get("git"), Mapping):
            out.append(_git_source(entry["git"]))
    return out


def _prepare_one(entry: Mapping[str, Any], target: str, cache: Path, endpoint: str | None, scratch: bool,
                 mounts: Mounts) -> str | None:
    if isinstance(entry.get("oss"), Mapping):
        return resolve(str(entry["oss"].get("path")), cache, endpoint)
    if isinstance(entry.get("nfs"), Mapping):
        return _nfs(entry["nfs"])
    if isinstance(entry.get("git"), Mapping):
        return _git(entry["git"], cache)
    if isinstance(entry.get("empty_dir"), Mapping):
        return _empty_dir(entry["empty_dir"], target, scratch, mounts)
    if isinstance(entry.get("image"), Mapping):
        raise ModelSourceError("image mounts copy files out of a container image, and this platform runs no "
                               "containers: put the files in oss, nfs or git storage instead")
    raise ModelSourceError("no storage kind given (oss, nfs, git, empty_dir)")


# -- nfs --------------------------------------------------------------------------------


def _nfs(spec: Mapping[str, Any]) -> str:
    path = str(spec.get("path") or "/")
    server = spec.get("server")
    if server:
        root = os.environ.get(NFS_ROOT_ENV)
        if not root:
            raise ModelSourceError(f"nfs server {server}: mount its exports on every node and set {NFS_ROOT_ENV} "
                                   f"to where (the export {path} is then read at ${NFS_ROOT_ENV}/{server}{path})")
        local = Path(root) / str(server) / path.lstrip("/")
    else:
        local = Path(path)
    if not local.is_dir():
        shown = f"{server}:{path} (looked for at {local})" if server else str(local)
        raise ModelSourceError(f"nfs {shown} is not a directory on this node")
    return str(local.resolve())


# -- empty_dir and /dev/shm ---------------------------------------------------------------


def _empty_dir(spec: Mapping[str, Any], target: str, scratch: bool, mounts: Mounts) -> str | None:
    size = spec.get("size_limit")
    if target == SHM:  # EAS's way to size the shared memory of an instance
        if size:
            _check_space(SHM, int(size), "empty_dir.size_limit")
        return SHM
    in_memory = spec.get("medium") == "memory" and os.path.isdir(SHM)
    base = SHM if in_memory else tempfile.gettempdir()
    if size:
        _check_space(base, int(size), "empty_dir.size_limit")
    if not scratch:
        return None
    directory = tempfile.mkdtemp(prefix="eas-empty-", dir=base)
    mounts.scratch.append(directory)
    return directory


def _check_space(path: str, gb: int, what: str) -> None:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        raise ModelSourceError(f"{what} {gb} GB: {path} cannot be read on this node ({exc.strerror})") from None
    total = usage.total if path == SHM else usage.free
    if total < gb * GB:
        kind = "size" if path == SHM else "free space"
        raise ModelSourceError(f"{what} asks for {gb} GB, but {path} on this node has a {kind} of "
                               f"{total / GB:.1f} GB")


# -- git ---------------------------------------------------------------------------------


def _git_source(spec: Mapping[str, Any]) -> str:
    """The repository as a cache source: URL, branch and commit (no credentials)."""
    return f"git+{spec.get('repo')}#{spec.get('branch') or ''}@{spec.get('commit') or ''}"


def _git(spec: Mapping[str, Any], cache: Path) -> str:
    repo, branch, commit = str(spec.get("repo") or ""), spec.get("branch"), spec.get("commit")
    git = shutil.which("git")
    if git is None:
        raise ModelSourceError("git mounts need the git command on every node")
    scheme = urlsplit(repo).scheme.lower()
    if scheme not in ("https", "http", "ssh", "git", "file") or repo.startswith("-"):
        raise ModelSourceError(f"git repo {redact_url(repo)}: use an https://, ssh://, git:// or file:// URL")
    if scheme == "http" and not plain_http_allowed(repo):
        raise ModelSourceError(f"git repo {redact_url(repo)}: plain http is off on this server; use https")
    url = _with_credentials(repo, spec.get("username"), spec.get("password"))
    # The branch head decides the cache entry, so a push reaches instances started after it.
    revision = str(commit) if commit else _head(git, url, branch, repo)

    def build(tmp: Path) -> Path:
        dest = tmp / "repo"
        args = [git, "clone", "--quiet"]
        if not commit:
            args += ["--depth", "1"] + (["--branch", str(branch)] if branch else [])
        _run([*args, "--", url, str(dest)], repo)
        if commit:
            _run([git, "-C", str(dest), "checkout", "--quiet", "--detach", str(commit)], repo)
        shutil.rmtree(dest / ".git", ignore_errors=True)  # the files, not the history (nor credentials)
        return dest

    key = hashlib.sha256(f"{repo}\n{branch}\n{revision}".encode()).hexdigest()[:24]
    return str(_cached(cache, key, _git_source(spec), build))


def _with_credentials(repo: str, username: Any, password: Any) -> str:
    if not (username or password):
        return repo
    parts = urlsplit(repo)
    if parts.scheme not in ("https", "http"):
        return repo
    auth = quote(str(username or ""), safe="") + (":" + quote(str(password), safe="") if password else "")
    return urlunsplit((parts.scheme, f"{auth}@{parts.netloc.rsplit('@', 1)[-1]}", parts.path, parts.query,
                       parts.fragment))


def _head(git: str, url: str, branch: Any, shown: str) -> str:
    ref = f"refs/heads/{branch}" if branch else "HEAD"
    out = _run([git, "ls-remote", "--", url, ref], shown)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name.strip() == ref:
            return sha.strip()
    raise ModelSourceError(f"git repo {redact_url(shown)} has no branch {branch!r}" if branch
                           else f"git repo {redact_url(shown)} has no HEAD")


def _run(args: list[str], shown: str) -> str:
    # Never a prompt (a password, an unknown ssh host key): a mount fails with the reason instead.
    env = {"GIT_SSH_COMMAND": "ssh -o BatchMode=yes", **os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelSourceError(f"git repo {redact_url(shown)}: no answer within {DOWNLOAD_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        reason = redact_text(lines[-1] if lines else f"git exited with {done.returncode}")
        raise ModelSourceError(f"git repo {redact_url(shown)}: {reason}")
    return done.stdout
