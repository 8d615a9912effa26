"""User code's own dependencies: `requirements.txt` in `processor_path` -> a Ray runtime_env.

Installing a service's requirements into the server's environment would let one
service break every other (and the server). Ray's `pip` runtime_env instead builds
a virtualenv per distinct requirement set, layered on the server's environment (so
Ray and our processors stay importable), caches it, and starts that service's
replicas in it. The instance's processor then imports the user's packages from there.

Wiring (done by the backend, not here): for a service with `processor_path`, call
`runtime_env(local_code_dir)` after the code is fetched and pass the result as
`ray_actor_options["runtime_env"]`; `None` means no requirements (no runtime_env).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REQUIREMENTS_FILE = "requirements.txt"


class RequirementsError(ValueError):
    """requirements.txt has a line we will not install; the service fails with this text."""


def read_requirements(path: Path) -> list[str]:
    """The requirement specifiers of a requirements file, validated one by one (PEP 508).

    Options (`-r`, `-e`, `--index-url`, ...) and local paths are refused: the file is
    installed by Ray away from the code directory, and packages come from the index
    pip is configured with, not from one a service names.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"cannot read {path.name}: {exc}") from None
    packages: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name} line {number} ({line!r})"
        if line.startswith("-"):
            raise RequirementsError(f"{where}: pip options are not supported; list package "
                                    "requirements only (name, version specifier, extras, markers)")
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{where} is not a valid requirement: {exc}") from None
        if requirement.url and requirement.url.startswith("file:"):
            raise RequirementsError(f"{where}: local file requirements are not supported")
        packages.append(str(requirement))
    return packages


def runtime_env(processor_path_local: str | None) -> dict[str, Any] | None:
    """Ray runtime_env for the user code at `processor_path_local`, or None when it needs none.

    Only a directory can ship requirements (a single .py file has none). Raises
    RequirementsError for a requirements.txt that cannot be installed as given.
    """
    if not processor_path_local:
        return None
    root = Path(processor_path_local)
    if not root.is_dir():
        return None
    path = root / REQUIREMENTS_FILE
    if not path.is_file():
        return None
    packages = read_requirements(path)
    if not packages:
        return None
    # pip_check off: the layered env inherits the server's packages, whose pins pip
    # would report as conflicts without any of them mattering to the service.
    return {"pip": {"packages": packages, "pip_check": False}}
