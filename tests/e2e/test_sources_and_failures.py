"""Model sources over HTTP, unsafe archives, broken models and isolation between services."""

from __future__ import annotations

import functools
import io
import json
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.harness import sklearn_service, write_json

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory):
    """A real HTTP server on loopback that serves model archives from a directory."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _predict_ok(server, name: str, iris) -> None:  # noqa: ANN001
    token = server.desc(name)["AccessToken"]
    resp = server.predict(name, json.dumps({"instances": iris["rows"]}), token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == iris["expected"]


def test_http_archives_tar_gz_and_zip(server, iris, file_server, tmp_path):
    root, url = file_server
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(iris["path"], arcname="model/model.joblib")
    with zipfile.ZipFile(root / "model.zip", "w") as zf:
        zf.write(iris["path"], arcname="model.joblib")

    server.eascmd("create", str(write_json(tmp_path / "t.json", sklearn_service("from_tar", f"{url}/model.tar.gz"))))
    _predict_ok(server, "from_tar", iris)
    server.eascmd("create", str(write_json(tmp_path / "z.json", sklearn_service("from_zip", f"{url}/model.zip"))))
    _predict_ok(server, "from_zip", iris)
    for name in ("from_tar", "from_zip"):
        server.eascmd("delete", name, "-y")


def _evil_tar(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_archive_escaping_its_directory_is_refused(server, file_server, tmp_path):
    root, url = file_server
    _evil_tar(root / "evil.tar.gz")
    with zipfile.ZipFile(root / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.txt", "pwned")

    for name, archive in (("evil_tar", "evil.tar.gz"), ("evil_zip", "evil.zip")):
        res = server.eascmd("create", str(write_json(tmp_path / f"{name}.json",
                                                     sklearn_service(name, f"{url}/{archive}"))), check=False)
        assert res.returncode != 0
        assert "refused" in res.stdout + res.stderr and "outside" in res.stdout + res.stderr
        info = server.desc(name)
        assert info["Status"] == "Failed" and "../../escaped.txt" in info["Message"]
        server.eascmd("delete", name, "-y")
    assert not list(server.data_dir.rglob("escaped.txt"))
    assert not (server.data_dir.parent / "escaped.txt").exists()


def test_corrupt_model_fails_with_reason_while_neighbour_answers(server, iris, tmp_path):
    server.eascmd("create", str(write_json(tmp_path / "good.json", sklearn_service("healthy", iris["path"]))))
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"this is not a pickle at all")

    res = server.eascmd("create", str(write_json(tmp_path / "bad.json", sklearn_service("broken", corrupt))),
                        check=False)
    assert res.returncode != 0
    assert "[FAIL]" in res.stdout + res.stderr
    info = server.desc("broken")
    assert info["Status"] == "Failed"
    assert "corrupt.pkl" in info["Message"], info["Message"]
    assert "Traceback" not in info["Message"]
    _predict_ok(server, "healthy", iris)
    assert server.predict("broken", b"{}", info["AccessToken"]).status_code == 503

    missing = sklearn_service("missing_model", tmp_path / "nowhere.pkl")
    res = server.eascmd("create", str(write_json(tmp_path / "m.json", missing)), check=False)
    assert res.returncode != 0
    assert "does not exist" in server.desc("missing_model")["Message"]

    # Fixing the broken service's model with modify brings it to Running.
    server.eascmd("modify", "broken", "-Dmodel_path=" + str(iris["path"]))
    _predict_ok(server, "broken", iris)
    _predict_ok(server, "healthy", iris)
    for name in ("healthy", "broken", "missing_model"):
        server.eascmd("delete", name, "-y")


def test_user_processor_errors_are_400_and_isolated(server, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(
        "import json\n"
        "class Doubler:\n"
        "    def initialize(self):\n"
        "        self.factor = 2\n"
        "    def process(self, data):\n"
        "        req = json.loads(data)\n"
        "        if req.get('boom'):\n"
        "            raise RuntimeError('asked to fail')\n"
        "        if req.get('sleep'):\n"
        "            import time; time.sleep(req['sleep'])\n"
        "        return json.dumps({'y': req['x'] * self.factor}).encode(), 200\n"
    )
    spec = {"name": "doubler", "processor_type": "python", "processor_path": str(code),
            "processor_entry": "app.py",
            "metadata": {"instance": 1, "cpu": 0.5, "rpc": {"keepalive": 1000}}}
    server.eascmd("create", str(write_json(tmp_path / "d.json", spec)))
    token = server.desc("doubler")["AccessToken"]
    assert server.predict("doubler", json.dumps({"x": 21}), token).json() == {"y": 42}
    failed = server.predict("doubler", json.dumps({"boom": True}), token)
    assert failed.status_code == 400
    assert "asked to fail" in failed.json()["message"] and failed.json()["request_id"]
    assert server.predict("doubler", b"not json", token).status_code == 400
    hung = server.predict("doubler", json.dumps({"sleep": 3}), token)
    assert hung.status_code == 408 and "keepalive" in hung.json()["message"]
    # The instance survived its processor's errors.
    assert server.predict("doubler", json.dumps({"x": 1}), token).json() == {"y": 2}

    (code / "broken.py").write_text("import no_such_module_anywhere\n")
    bad = {**spec, "name": "bad_code", "processor_entry": "broken.py"}
    res = server.eascmd("create", str(write_json(tmp_path / "b.json", bad)), check=False)
    assert res.returncode != 0
    assert "no_such_module_anywhere" in server.desc("bad_code")["Message"]
    assert server.predict("doubler", json.dumps({"x": 3}), token).json() == {"y": 6}
    for name in ("doubler", "bad_code"):
        server.eascmd("delete", name, "-y")


def test_user_code_requirements_install_per_service(server, tmp_path):
    """requirements.txt next to user code is installed for that service only (a Ray pip env)."""
    code = tmp_path / "reqcode"
    code.mkdir()
    (code / "requirements.txt").write_text("inflection==0.5.1\n")
    (code / "app.py").write_text(
        "import inflection\n"
        "class Camel:\n"
        "    def initialize(self):\n"
        "        pass\n"
        "    def process(self, data):\n"
        "        return inflection.camelize(data.decode()), 200\n"
    )
    spec = {"name": "camel", "processor_type": "python", "processor_path": str(code),
            "metadata": {"instance": 1, "cpu": 0.5}}
    server.eascmd("create", str(write_json(tmp_path / "camel.json", spec)), timeout=600)
    token = server.desc("camel")["AccessToken"]
    assert server.predict("camel", b"hello_world", token).text == "HelloWorld"
    import importlib.util

    assert importlib.util.find_spec("inflection") is None, "the server's own environment is untouched"
    server.eascmd("delete", "camel", "-y")
