"""Fixtures for end-to-end tests: real servers, real models trained here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import EasServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server per test module: modules stay independent, Ray boots once per module."""
    srv = EasServer(tmp_path_factory.mktemp("eas-data")).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path):
    srv = EasServer(tmp_path / "eas-data")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny real classifier trained here, with rows and its own predictions to compare."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    path = tmp_path_factory.mktemp("iris") / "model.joblib"
    joblib.dump(model, path)
    rows = x[:5].round(4)
    return {"path": path, "rows": rows.tolist(), "expected": model.predict(rows).tolist(), "model": model}
