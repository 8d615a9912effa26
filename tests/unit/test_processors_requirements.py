"""requirements.txt in processor_path -> the Ray runtime_env that installs it per service."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.requirements import RequirementsError, runtime_env


def code_dir(tmp_path: Path, requirements: str | None) -> Path:
    root = tmp_path / "code"
    root.mkdir()
    (root / "app.py").write_text("class P:\n    def initialize(self): pass\n    def process(self, d): return d\n")
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def test_requirements_become_a_pip_runtime_env(tmp_path: Path) -> None:
    root = code_dir(tmp_path, "# pinned for the service\nsix==1.16.0\n\n"
                              "tzdata>=2024.1  # comment after\nrich[jupyter]; python_version >= '3.8'\n")
    env = runtime_env(str(root))
    assert env == {"pip": {"packages": ["six==1.16.0", "tzdata>=2024.1",
                                        'rich[jupyter]; python_version >= "3.8"'],
                           "pip_check": False}}


def test_ray_accepts_the_runtime_env(tmp_path: Path) -> None:
    """Ray validates the dict the way a deployment's ray_actor_options would."""
    from ray.runtime_env import RuntimeEnv

    env = runtime_env(str(code_dir(tmp_path, "six==1.16.0\n")))
    assert env is not None
    assert RuntimeEnv(**env).pip_config()["packages"] == ["six==1.16.0"]


@pytest.mark.parametrize("setup", ["none", "missing", "file", "comments only"])
def test_no_runtime_env_without_requirements(tmp_path: Path, setup: str) -> None:
    if setup == "none":
        assert runtime_env(None) is None
    elif setup == "missing":
        assert runtime_env(str(code_dir(tmp_path, None))) is None
        assert runtime_env(str(tmp_path / "nowhere")) is None
    elif setup == "file":
        assert runtime_env(str(code_dir(tmp_path, "six\n") / "app.py")) is None
    else:
        assert runtime_env(str(code_dir(tmp_path, "# nothing\n\n"))) is None


@pytest.mark.parametrize("line, message", [
    ("-r other.txt", "line 2 ('-r other.txt'): pip options are not supported"),
    ("--index-url https://example.invalid/simple", "pip options are not supported"),
    ("-e .", "pip options are not supported"),
    ("not a requirement!!", "line 2 ('not a requirement!!') is not a valid requirement"),
    ("pkg @ file:///tmp/pkg.whl", "local file requirements are not supported"),
])
def test_bad_lines_are_refused_by_line(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(RequirementsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runtime_env(str(code_dir(tmp_path, f"six\n{line}\n")))
