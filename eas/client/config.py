"""The eascmd configuration file: where the server is and the admin credentials.

`eas-server` writes `<data-dir>/eascmd.conf`; `eascmd config` writes
`~/.eascmd/eascmd.conf`. An INI file so operators can read and edit it by hand.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

SECTION = "eas"
DEFAULT_PATH = Path.home() / ".eascmd" / "eascmd.conf"
ENV_VAR = "EASCMD_CONFIG"


@dataclass(frozen=True)
class ClientConfig:
    endpoint: str
    access_id: str
    access_key: str
    region: str = "local"


def default_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def write(path: str | os.PathLike[str], cfg: ClientConfig) -> None:
    parser = configparser.ConfigParser()
    parser[SECTION] = {
        "endpoint": cfg.endpoint,
        "access_id": cfg.access_id,
        "access_key": cfg.access_key,
        "region": cfg.region,
    }
    target = Path(path)
    if not target.parent.exists():
        target.parent.mkdir(parents=True, mode=0o700)  # e.g. ~/.eascmd: the owner's only
    tmp = target.with_suffix(".tmp")
    # The key is a secret: the file is readable by its owner only, even when a leftover
    # temp file (or an old config) was created with a wider mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        parser.write(fh)
    os.replace(tmp, target)


class ConfigError(Exception):
    pass


def read(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    target = Path(path) if path else default_path()
    if not target.is_file():
        raise ConfigError(
            f"no eascmd config at {target}: run 'eascmd config -i <id> -k <key> -e <endpoint>' "
            "or pass -c <data-dir>/eascmd.conf"
        )
    parser = configparser.ConfigParser()
    try:
        parser.read(target)
        section = parser[SECTION]
        return ClientConfig(
            endpoint=section["endpoint"].rstrip("/"),
            access_id=section["access_id"],
            access_key=section["access_key"],
            region=section.get("region", "local"),
        )
    except (configparser.Error, KeyError) as exc:
        raise ConfigError(f"{target} is not a valid eascmd config ({exc}): rewrite it with 'eascmd config'") from None
