"""Archives as model sources, unpacked safely.

Every member is checked before anything is written: no absolute paths, no `..`, no
links, only files and directories, and a bound on the unpacked size (zip bombs); the
tar `data` filter is a second guard. A model archive can never write outside its
own directory.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar", ".zip")
#: Refuse archives that unpack to more than this (zip bombs); override per server.
MAX_UNPACKED_BYTES = int(os.environ.get("EAS_MAX_UNPACKED_BYTES", str(20 * 1024**3)))


class ModelSourceError(Exception):
    """The source cannot be made local; the text says why and what to fix."""


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack after checking every member; return the model dir (a lone top dir is entered)."""
    dest.mkdir(parents=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            _unpack_zip(archive, dest)
        else:
            _unpack_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ModelSourceError(f"{archive.name} is not a readable archive: {exc}") from None
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def safe_member_path(dest: Path, member: str, archive: str) -> Path:
    pure = PurePosixPath(member.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or member.startswith("/"):
        raise ModelSourceError(f"archive {archive} refused: member '{member}' would land outside its directory")
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise ModelSourceError(f"archive {archive} refused: member '{member}' would land outside its directory")
    return target


def _unpack_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        total = 0
        for m in members:
            safe_member_path(dest, m.name, archive.name)
            if m.issym() or m.islnk():
                raise ModelSourceError(
                    f"archive {archive.name} refused: member '{m.name}' is a link (links are not allowed in model archives)"
                )
            if not (m.isfile() or m.isdir()):
                raise ModelSourceError(f"archive {archive.name} refused: member '{m.name}' is not a regular file")
            total += m.size
            if total > MAX_UNPACKED_BYTES:
                raise ModelSourceError(f"archive {archive.name} refused: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        # Every member was checked above; the 'data' filter is a second guard.
        tar.extractall(dest, members=members, filter="data")


def _unpack_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        total = 0
        for info in infos:
            safe_member_path(dest, info.filename, archive.name)
            mode = info.external_attr >> 16
            if mode and stat.S_ISLNK(mode):
                raise ModelSourceError(
                    f"archive {archive.name} refused: member '{info.filename}' is a link (links are not allowed in model archives)"
                )
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise ModelSourceError(f"archive {archive.name} refused: unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        zf.extractall(dest)
