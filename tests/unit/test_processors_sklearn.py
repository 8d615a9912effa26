"""SklearnProcessor against real, tiny scikit-learn models trained here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from processors import ModelContext, ModelLoadError, ProcessorError, Request
from processors.sklearn import SklearnProcessor

X = np.array([[0.1, 1.0, 3.0], [0.2, 0.9, 2.5], [0.9, 0.1, 0.3], [1.0, 0.2, 0.1],
              [0.5, 0.5, 1.5], [0.8, 0.3, 0.2], [0.15, 0.95, 2.9], [0.95, 0.05, 0.4]])
Y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
QUERY = [[0.3, 0.7, 2.0], [0.7, 0.2, 0.5], [0.5, 0.5, 0.5]]


def save(tmp_path: Path, model: Any, name: str = "model.pkl") -> Path:
    path = tmp_path / name
    if name.endswith(".joblib"):
        joblib.dump(model, path)
    else:
        path.write_bytes(pickle.dumps(model))
    return path


def loaded(model_dir: Path, **ctx: Any) -> SklearnProcessor:
    processor = SklearnProcessor(ModelContext(model_dir=str(model_dir), **ctx))
    processor.load()
    return processor


def ask(processor: SklearnProcessor, body: Any) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = processor.predict(Request(raw))
    assert response.status == 200 and response.content_type == "application/json"
    return json.loads(response.body)


@pytest.fixture(scope="module")
def logreg() -> LogisticRegression:
    return LogisticRegression().fit(X, Y)


def test_predictions_match_sklearn(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg, "m.joblib")
    answer = ask(loaded(tmp_path), {"instances": QUERY})
    assert answer == {"predictions": logreg.predict(np.array(QUERY)).tolist()}


@pytest.mark.parametrize("body", [
    {"instances": [{"features": row} for row in QUERY]},   # BML rows
    QUERY,                                                 # bare list of rows
])
def test_other_request_spellings(tmp_path: Path, logreg: LogisticRegression, body: Any) -> None:
    save(tmp_path, logreg)
    assert ask(loaded(tmp_path), body)["predictions"] == logreg.predict(np.array(QUERY)).tolist()


@pytest.mark.parametrize("config", ['{"return_proba": true}', {"return_proba": True}])
def test_return_proba(tmp_path: Path, logreg: LogisticRegression, config: Any) -> None:
    save(tmp_path, logreg)
    answer = ask(loaded(tmp_path, model_config=config), {"instances": QUERY})
    np.testing.assert_allclose(answer["probabilities"], logreg.predict_proba(np.array(QUERY)))
    assert answer["predictions"] == logreg.predict(np.array(QUERY)).tolist()


def test_string_labels_and_file_path_as_model_dir(tmp_path: Path) -> None:
    tree = DecisionTreeClassifier(random_state=0).fit(X, np.where(Y == 1, "spam", "ham"))
    path = save(tmp_path, tree, "tree.pickle")
    assert ask(loaded(path), {"instances": QUERY})["predictions"] == tree.predict(QUERY).tolist()


def test_regressor_floats(tmp_path: Path) -> None:
    reg = LinearRegression().fit(X, X @ [1.0, -2.0, 0.5])
    save(tmp_path, reg)
    np.testing.assert_allclose(ask(loaded(tmp_path), {"instances": QUERY})["predictions"],
                               reg.predict(np.array(QUERY)))


def test_empty_instances(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg)
    assert ask(loaded(tmp_path), {"instances": []}) == {"predictions": []}


def test_hidden_files_and_folders_are_ignored(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg, "model.pkl")
    (tmp_path / "._model.pkl").write_bytes(b"macOS resource fork")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    save(tmp_path / ".ipynb_checkpoints", logreg, "old.pkl")
    assert ask(loaded(tmp_path), QUERY)["predictions"] == logreg.predict(np.array(QUERY)).tolist()


def test_model_in_a_subfolder_and_model_entry(tmp_path: Path, logreg: LogisticRegression) -> None:
    (tmp_path / "wrapped").mkdir()
    save(tmp_path / "wrapped", logreg, "only.joblib")
    assert ask(loaded(tmp_path), QUERY)["predictions"] == logreg.predict(np.array(QUERY)).tolist()

    tree = DecisionTreeClassifier(random_state=0).fit(X, 1 - Y)
    save(tmp_path, logreg, "a.pkl")
    save(tmp_path, tree, "b.pkl")
    answer = ask(loaded(tmp_path, model_entry="b.pkl"), QUERY)
    assert answer["predictions"] == tree.predict(np.array(QUERY)).tolist()


def test_batch_matches_single_requests(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg)
    processor = loaded(tmp_path, model_config={"return_proba": True})
    bodies = [{"instances": QUERY[:2]}, {"instances": [[1, 2]]}, {"instances": []},
              {"instances": [QUERY[2]]}, b"{oops"]
    requests = [Request(b if isinstance(b, bytes) else json.dumps(b).encode(), request_id=f"r{i}")
                for i, b in enumerate(bodies)]
    batch = processor.predict_batch(requests)
    assert [r.status for r in batch] == [200, 400, 200, 200, 400]
    for request, response in zip(requests, batch):
        if response.status == 200:
            assert response.body == processor.predict(request).body
    error = json.loads(batch[1].body)
    assert error["request_id"] == "r1" and "expects 3 features" in error["message"]


# ---------------------------------------------------------------- load errors

def load_error(model_dir: Path, **ctx: Any) -> str:
    with pytest.raises(ModelLoadError) as info:
        loaded(model_dir, **ctx)
    return str(info.value)


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"this is not a pickle")
    assert "model.pkl is not a valid pickle/joblib file" in load_error(tmp_path)


def test_no_model_file(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    message = load_error(tmp_path)
    assert "no *.pkl, *.pickle, *.joblib file" in message and "README.md" in message
    assert "does not exist" in load_error(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="no model_path"):
        SklearnProcessor(ModelContext()).load()


def test_two_model_files(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg, "a.pkl")
    save(tmp_path, logreg, "b.joblib")
    message = load_error(tmp_path)
    assert "a.pkl, b.joblib" in message and "model_entry" in message


def test_missing_model_entry(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, logreg, "a.pkl")
    message = load_error(tmp_path, model_entry="b.pkl")
    assert "'b.pkl' not found" in message and "a.pkl" in message
    assert "outside" in load_error(tmp_path, model_entry="../a.pkl")


def test_object_without_predict(tmp_path: Path) -> None:
    save(tmp_path, {"weights": [1, 2, 3]})
    assert "builtins.dict object, which has no predict()" in load_error(tmp_path)


def test_pickle_needing_a_missing_module(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"cno_such_module_xyz\nThing\n)\x81.")
    assert "needs Python module 'no_such_module_xyz'" in load_error(tmp_path)


def test_bad_model_config(tmp_path: Path, logreg: LogisticRegression) -> None:
    save(tmp_path, LinearRegression().fit(X, Y))
    assert "has no predict_proba" in load_error(tmp_path, model_config={"return_proba": True})
    assert "not valid JSON" in load_error(tmp_path, model_config="{return_proba")


# ---------------------------------------------------------------- request errors

@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    ({"rows": QUERY}, 'expected {"instances"'),
    ({"instances": {"a": 1}}, "got dict"),
    ({"instances": [[0.1, 0.2]]}, "model expects 3 features per instance, received 2"),
    ({"instances": [[0.1, 0.2, 0.3], [0.1]]}, "instance 0 has 3 features, instance 1 has 1"),
    ({"instances": [0.1, 0.2, 0.3]}, "instance 0 must be a list of features"),
    ({"instances": [{"values": [1, 2, 3]}]}, 'without a "features" list'),
    ({"instances": [["a", "b", "c"]]}, "model rejected the input: ValueError"),
    ({"instances": [[[1, 2], [3, 4], [5, 6]]]}, "flat lists of feature values"),
])
def test_bad_requests(tmp_path: Path, logreg: LogisticRegression, body: Any, message: str) -> None:
    save(tmp_path, logreg)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ProcessorError) as info:
        loaded(tmp_path).predict(Request(raw))
    assert info.value.status == 400
    assert message in info.value.message
