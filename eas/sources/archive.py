"""Archives as model sources, unpacked safely and within bounds.

Every member is checked before anything is written: no absolute paths, no `..`, no
links, only files and directories, at most `MAX_MEMBERS` members and `MAX_UNPACKED_BYTES`
in all (zip bombs); the tar `data` filter is a second guard. A model archive can never
write outside its own directory.

Unpacking runs in a child process with an address-space limit (`UNPACK_MEMORY_BYTES`),
a file-size limit and a wall-clock limit (`UNPACK_TIMEOUT_S`): whatever an archive holds
(a multi-gigabyte tar header, millions of members, a slow decompression bomb), the
process that asked, eas-server or an instance, neither runs out of memory nor hangs.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar", ".zip")
#: Refuse archives that unpack to more than this (zip bombs); env EAS_MAX_UNPACKED_BYTES.
MAX_UNPACKED_BYTES = int(os.environ.get("EAS_MAX_UNPACKED_BYTES", str(20 * 1024**3)))
#: Refuse archives (and object-store directories) with more members; env EAS_MAX_ARCHIVE_MEMBERS.
MAX_MEMBERS = int(os.environ.get("EAS_MAX_ARCHIVE_MEMBERS", "100000"))
#: Longest an unpack may take; env EAS_UNPACK_TIMEOUT_S.
UNPACK_TIMEOUT_S = float(os.environ.get("EAS_UNPACK_TIMEOUT_S", "600"))
#: Address space of the unpacking process; env EAS_UNPACK_MEMORY_BYTES.
UNPACK_MEMORY_BYTES = int(os.environ.get("EAS_UNPACK_MEMORY_BYTES", str(1024**3)))
#: Variables instances on other nodes need to apply the same bounds (the backend passes them on).
ENV_VARS = ("EAS_MAX_UNPACKED_BYTES", "EAS_MAX_ARCHIVE_MEMBERS", "EAS_UNPACK_TIMEOUT_S", "EAS_UNPACK_MEMORY_BYTES")

_REFUSED = 3
_NO_MEMORY = 4


class ModelSourceError(Exception):
    """The source cannot be made local; the text says why and what to fix."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path, timeout_s: float | None = None, memory_bytes: int | None = None) -> Path:
    """Unpack after checking every member; return the model dir (a lone top dir is entered).

    The work happens in a bounded child process (see the module doc).
    """
    timeout_s = UNPACK_TIMEOUT_S if timeout_s is None else timeout_s
    memory_bytes = UNPACK_MEMORY_BYTES if memory_bytes is None else memory_bytes
    dest.mkdir(parents=True)
    package_root = str(Path(__file__).resolve().parents[2])
    # The child needs no credential of ours (a Ray token, object-store keys): it gets none.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "EAS_OSS_ACCESS", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", "from eas.sources.archive import _child; _child()", str(archive), str(dest),
           str(timeout_s), str(memory_bytes), str(MAX_UNPACKED_BYTES), str(MAX_MEMBERS)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 5, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelSourceError(f"archive {archive.name} refused: unpacking took longer than {timeout_s:g} s") from None
    reason = (done.stderr.strip().splitlines() or [""])[-1]
    if done.returncode == _REFUSED:
        raise ModelSourceError(reason)
    if done.returncode == _NO_MEMORY:
        raise ModelSourceError(f"archive {archive.name} refused: unpacking needs more than {memory_bytes} bytes "
                               "of memory")
    if done.returncode == -signal.SIGKILL or done.returncode == -signal.SIGXCPU:
        raise ModelSourceError(f"archive {archive.name} refused: unpacking took longer than {timeout_s:g} s")
    if done.returncode != 0:
        raise ModelSourceError(f"unpacking {archive.name} failed (exit {done.returncode}): {reason}")
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _child() -> None:
    """The unpacking process: limits first, then the checked unpack; the reason on stderr."""
    archive, dest, timeout_s, memory, max_bytes, max_members = sys.argv[1:7]
    limit = int(memory)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(float(timeout_s)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    # One file can never be larger than the whole archive may unpack to.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(max_bytes), int(max_bytes)))
    deadline = time.monotonic() + float(timeout_s)
    try:
        unpack_checked(Path(archive), Path(dest), deadline, int(max_bytes), int(max_members))
    except ModelSourceError as exc:
        sys.stderr.write(_one_line(str(exc)) + "\n")
        sys.exit(_REFUSED)
    except MemoryError:
        sys.exit(_NO_MEMORY)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        sys.stderr.write(_one_line(f"{Path(archive).name} is not a readable archive: {exc}") + "\n")
        sys.exit(_REFUSED)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def unpack_checked(archive: Path, dest: Path, deadline: float, max_bytes: int = MAX_UNPACKED_BYTES,
                   max_members: int = MAX_MEMBERS) -> None:
    """The checks and the unpack themselves (in the calling process: `unpack` runs this
    in a bounded child)."""
    if archive.name.lower().endswith(".zip"):
        _unpack_zip(archive, dest, deadline, max_bytes, max_members)
    else:
        _unpack_tar(archive, dest, deadline, max_bytes, max_members)


def safe_member_path(dest: Path, member: str, archive: str) -> Path:
    pure = PurePosixPath(member.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or member.startswith("/"):
        raise ModelSourceError(f"archive {archive} refused: member '{member}' would land outside its directory")
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise ModelSourceError(f"archive {archive} refused: member '{member}' would land outside its directory")
    return target


def _in_time(deadline: float, archive: str) -> None:
    if time.monotonic() > deadline:
        raise ModelSourceError(f"archive {archive} refused: unpacking took too long")


def _unpack_tar(archive: Path, dest: Path, deadline: float, max_bytes: int, max_members: int) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = []
        total = 0
        # Read member by member (not getmembers()), so a bound stops the read early.
        for m in tar:
            members.append(m)
            if len(members) > max_members:
                raise ModelSourceError(f"archive {archive.name} refused: more than {max_members} members")
            _in_time(deadline, archive.name)
            safe_member_path(dest, m.name, archive.name)
            if m.issym() or m.islnk():
                raise ModelSourceError(
                    f"archive {archive.name} refused: member '{m.name}' is a link (links are not allowed in model archives)"
                )
            if not (m.isfile() or m.isdir()):
                raise ModelSourceError(f"archive {archive.name} refused: member '{m.name}' is not a regular file")
            total += m.size
            if total > max_bytes:
                raise ModelSourceError(f"archive {archive.name} refused: unpacks to more than {max_bytes} bytes")
        # Every member was checked above; the 'data' filter is a second guard.
        for m in members:
            _in_time(deadline, archive.name)
            tar.extract(m, dest, filter="data")


def _unpack_zip(archive: Path, dest: Path, deadline: float, max_bytes: int, max_members: int) -> None:
    declared = _zip_entry_count(archive)
    if declared is not None and declared > max_members:
        raise ModelSourceError(f"archive {archive.name} refused: more than {max_members} members")
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ModelSourceError(f"archive {archive.name} refused: more than {max_members} members")
        total = 0
        for info in infos:
            safe_member_path(dest, info.filename, archive.name)
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise ModelSourceError(
                    f"archive {archive.name} refused: member '{info.filename}' is a link (links are not allowed in model archives)"
                )
            total += info.file_size
            if total > max_bytes:
                raise ModelSourceError(f"archive {archive.name} refused: unpacks to more than {max_bytes} bytes")
        for info in infos:
            _in_time(deadline, archive.name)
            zf.extract(info, dest)


def _zip_entry_count(archive: Path) -> int | None:
    """The entry count the end-of-central-directory record declares, read before the
    directory itself is loaded (its size in memory grows with that count)."""
    try:
        with open(archive, "rb") as fh:
            record = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    if not record:
        return None
    return int(record[4])  # _ECD_ENTRIES_TOTAL
