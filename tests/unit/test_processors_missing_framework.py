"""A built-in processor whose framework is not installed: the service fails with the pip command.

`pip install eas-serving` has no framework; each comes with an extra. A missing one is
simulated either by pointing a registry entry at a module that does not exist, or in a
subprocess that blocks imports (`sys.modules[name] = None`, which makes both `import`
and `importlib.util.find_spec` see the module as absent).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from processors import (
    MissingFrameworkError,
    ModelLoadError,
    check_framework,
    create_processor,
    registry,
)
from tests.support.platform import Harness, api_fixture  # noqa: F401 - api_fixture registers the fixture

REPO = Path(__file__).resolve().parents[2]
ABSENT = "eas_no_such_framework_module"
SKLEARN_MISSING = (f"the sklearn processor needs the Python module '{ABSENT}', which is not installed; "
                   'run: pip install "eas-serving[sklearn]"')


@pytest.fixture(name="no_sklearn")
def no_sklearn_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sklearn entry needs a module that is not installed anywhere."""
    table = tuple(dataclasses.replace(e, modules=(ABSENT,)) if e.code == "sklearn" else e for e in registry.TABLE)
    monkeypatch.setattr(registry, "TABLE", table)


def test_every_framework_names_its_modules_and_an_extra_that_exists() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (everything,) = extras["all"]  # "eas-serving[sklearn,onnx,...]"
    in_all = everything.partition("[")[2].rstrip("]").split(",")
    for entry in registry.TABLE:
        if entry.target is None:
            continue
        assert entry.modules and entry.extra, entry.code
        assert entry.extra in extras, f"{entry.code}: no extra {entry.extra!r} in pyproject.toml"
        assert entry.extra in in_all, f"{entry.code}: extra {entry.extra!r} is not in eas-serving[all]"


def test_installed_frameworks_pass() -> None:
    """The test venv has every extra: nothing is missing."""
    for code in registry.known_codes():
        assert registry.missing_framework(code) is None, code
        check_framework(code)


def test_missing_framework_names_the_exact_pip_command(no_sklearn: None) -> None:
    for code in ("sklearn", "SKLearn", "scikit-learn", "sklearn_cpu"):
        assert registry.missing_framework(code) == SKLEARN_MISSING
        with pytest.raises(MissingFrameworkError) as raised:
            check_framework(code)
        assert str(raised.value) == SKLEARN_MISSING
    assert issubclass(MissingFrameworkError, ValueError)
    # Not a framework processor: nothing to check (resolve refuses unknown codes itself).
    assert registry.missing_framework("sklearn", "python") is None
    assert registry.missing_framework("onnx") is None
    assert registry.missing_framework("caffe") is None
    assert registry.missing_framework(None) is None


def test_a_service_with_its_own_requirements_is_left_to_the_instance(no_sklearn: None, tmp_path: Path) -> None:
    """Its requirements.txt may install the framework in the service's own environment,
    which the server cannot see: only the instance (inside that environment) checks."""
    (tmp_path / "requirements.txt").write_text("scikit-learn\n")
    check_framework("sklearn", code_dir=str(tmp_path))
    with pytest.raises(MissingFrameworkError):
        check_framework("sklearn", code_dir=str(tmp_path / "elsewhere"))


def test_create_processor_fails_before_loading(no_sklearn: None, tmp_path: Path) -> None:
    with pytest.raises(MissingFrameworkError, match=r'pip install "eas-serving\[sklearn\]"'):
        create_processor({"processor": "sklearn"}, model_dir=str(tmp_path))
    # Only building (no load) needs no framework.
    assert type(create_processor({"processor": "sklearn"}, model_dir=str(tmp_path), load=False)).__name__ == \
        "SklearnProcessor"


def test_the_instance_reports_it_as_its_load_failure(no_sklearn: None, tmp_path: Path) -> None:
    """What a Serve replica raises (eas/backend/replica.py): the controller shows this text."""
    from eas.backend.ray_serve import failure_reason
    from eas.instance.runtime import load_processor
    from eas.spec import ServiceSpec

    spec = ServiceSpec.model_validate({"name": "iris", "processor": "sklearn", "metadata": {"instance": 1}})
    with pytest.raises(ModelLoadError) as raised:
        load_processor(spec, str(tmp_path))
    assert str(raised.value) == SKLEARN_MISSING
    serve_text = f"Traceback (most recent call last):\n  ...\nprocessors.base.ModelLoadError: {raised.value}\n"
    assert failure_reason(serve_text) == SKLEARN_MISSING


def test_the_service_fails_with_it_before_any_instance_starts(no_sklearn: None, api: Harness) -> None:
    api.create({"name": "iris", "processor": "sklearn", "token": "tok-iris-12345", "metadata": {"instance": 1}})
    api.reconcile_until(lambda: api.status("iris") == "Failed", "iris to fail")
    desc = api.describe("iris")
    assert (desc["Status"], desc["Message"]) == ("Failed", SKLEARN_MISSING)
    assert api.cluster.calls == []  # the controller never asked the backend to deploy it
    statuses = [e["Message"] for e in api.ok("GET", api.svc("iris", "/events"))["Events"] if e["Reason"] == "Status"]
    assert statuses[0] == f"Creating -> Failed: {SKLEARN_MISSING}", "the newest event first"


# Everything `pip install eas-serving` (no extra) does not bring.
NOT_IN_CORE = ("sklearn", "joblib", "scipy", "boto3", "botocore", "psycopg", "onnxruntime", "onnx", "torch",
               "tensorflow", "paddle", "xgboost", "lightgbm", "pypmml", "moto", "skl2onnx", "grpc_tools")

CORE_ONLY = f"""
import sys
for name in {NOT_IN_CORE!r}:
    sys.modules[name] = None  # import fails, find_spec answers None: as if not installed

import eas.server, eascmd.cli, eas.backend.ray_serve, eas.backend.replica, eas.instance.runtime
import processors
from processors.python import PythonProcessor

for code, extra in [("sklearn", "sklearn"), ("onnx", "onnx"), ("pytorch_cpu_1.10", "torch"),
                    ("tensorflow", "tensorflow"), ("paddle", "paddle"), ("xgboost", "xgboost"),
                    ("lightgbm", "lightgbm"), ("pmml", "pmml")]:
    try:
        processors.create_processor({{"processor": code}}, model_dir="/nonexistent")
    except processors.MissingFrameworkError as exc:
        assert str(exc).endswith(f'run: pip install "eas-serving[{{extra}}]"'), exc
    else:
        raise AssertionError(code)
assert processors.resolve(None, "python") is PythonProcessor
print("core ok")
"""


def test_the_core_import_path_needs_no_extra() -> None:
    """eas-server, eascmd, the instance and user-code processors import with no extra installed."""
    done = subprocess.run([sys.executable, "-c", CORE_ONLY], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "core ok"
