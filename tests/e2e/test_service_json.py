"""The service JSON users already have deploys as it is, on the real server and Ray Serve.

EAS's own examples (tests/e2e/fixtures, copied from EAS's documentation; only
`model_path` is pointed at a model trained here), a new-style JSON with metadata.name,
workspace_id, cloud, labels and storage mounts (a local directory as nfs, a file://
git repository), a group formed by metadata.group, PMML's bare lists and GET of a
model's signature. Everything is created at once by one fixture; one server for the
module (tests/e2e/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.harness import write_json
from tests.support.models import HeartModel, build_isolated, build_pmml_heart, read_answer

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures"

#: User code kept in a git repository and mounted at /mnt/code: reads the model
#: directory (an nfs mount) and says which service answered (its model_config).
READER = '''
import json, os

class Reader:
    def initialize(self):
        with open(os.path.join(self.model_path, "weights.txt")) as f:
            self.weights = f.read().strip()

    def process(self, data):
        return json.dumps({"weights": self.weights, "mounts": sorted(self.mounts),
                           "who": self.model_config}), 200
'''


def fixture_json(name: str, **substitute: Any) -> dict[str, Any]:
    return {**json.loads((FIXTURES / name).read_text()), **substitute}


def git_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "code"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c",
                        "init.defaultBranch=main", *args], cwd=root, check=True, capture_output=True)
    return root


def reader(name: str, repo: Path, nas: Path, instance: int = 1, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "instance": instance, "cpu": 0.5, **meta},
            "processor_type": "python", "processor_path": "/mnt/code", "processor_entry": "app.py",
            "model_path": "/mnt/nas", "model_config": name,
            "storage": [{"mount_path": "/mnt/code", "git": {"repo": f"file://{repo}", "branch": "main"}},
                        {"mount_path": "/mnt/nas/", "nfs": {"path": str(nas), "readOnly": True}}]}


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("service_json")
    with ThreadPoolExecutor(2) as pool:
        tf_job = pool.submit(build_isolated, "tensorflow", root / "tf")
        heart: HeartModel = build_pmml_heart(root / "heart")
        tf = tf_job.result()
    nas = root / "nas"
    nas.mkdir()
    (nas / "weights.txt").write_text("0.5 0.25")
    repo = git_repo(root / "repo", {"app.py": READER})
    services = {
        "mnist_saved_model_example": fixture_json("mnist_saved_model_example.json", model_path=str(tf.model_path)),
        "heart_disease_pmml": fixture_json("pmml.json", model_path=str(heart.path)),
        "reader": {**reader("reader", repo, nas, workspace_id="ws-123"),
                   "cloud": {"computing": {"instances": [{"type": "ecs.c7a.large"}]},
                             "networking": {"vpc_id": "vpc-1", "vswitch_id": "vsw-1"}},
                   "labels": {"team": "search", "env": "test"}},
        "recs_a": reader("recs_a", repo, nas, group="recs"),
        "recs_b": reader("recs_b", repo, nas, instance=2, group="recs"),
    }

    def create(name: str) -> tuple[str, Any]:
        return name, server.eascmd("create", str(write_json(root / f"{name}.json", services[name])), check=False)

    with ThreadPoolExecutor(len(services)) as pool:
        created = dict(pool.map(create, services))
    with server.admin() as client:
        tokens = {n: client.get(f"/api/v2/services/local/{n}").json().get("AccessToken") for n in services}
    # No deletes: the module's server (and every replica with it) stops right after.
    return {"created": created, "tokens": tokens, "tf": tf, "heart": heart, "root": root}


def ran(server, deployed: dict[str, Any], name: str) -> str:
    res = deployed["created"][name]
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{server.log_tail()}"
    return deployed["tokens"][name]


def test_the_eas_create_example_deploys_and_answers_with_its_signature(server, deployed: dict[str, Any]) -> None:
    token = ran(server, deployed, "mnist_saved_model_example")
    tf = deployed["tf"]
    resp = server.predict("mnist_saved_model_example", tf.body, token, **{"Content-Type": tf.content_type})
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(read_answer(tf, resp.content), tf.expected, rtol=1e-5)
    url = f"{server.url}/api/predict/mnist_saved_model_example"
    signature = httpx.get(url, headers={"Authorization": token}, timeout=30)
    assert signature.status_code == 200, signature.text
    body = signature.json()
    assert body["signature_name"] == "serving_default"
    assert {"name": "x", "shape": [-1, 3], "type": "DT_FLOAT"} in body["inputs"]
    assert httpx.get(url, timeout=30).status_code == 401, "the signature needs the token too"


def test_a_config_copied_from_eas_desc_applies_as_it_is(server, deployed: dict[str, Any]) -> None:
    token = ran(server, deployed, "mnist_saved_model_example")
    desc = write_json(deployed["root"] / "desc.json", fixture_json("mnist_saved_model_example_desc.json",
                                                                     model_path=str(deployed["tf"].model_path)))
    server.eascmd("modify", "mnist_saved_model_example", "-s", str(desc))
    config = json.loads(server.desc("mnist_saved_model_example")["ServiceConfig"])
    assert config["metadata"]["region"] == "cn-shanghai" and config["processor"] == "tensorflow_cpu"
    tf = deployed["tf"]
    resp = server.predict("mnist_saved_model_example", tf.body, token, **{"Content-Type": tf.content_type})
    assert resp.status_code == 200, resp.text
    assert server.desc("mnist_saved_model_example")["CurrentVersion"] == 2, "a new processor code: a new version"
    # Our own desc output goes back as it is: nothing changes, no new version.
    server.eascmd("modify", "mnist_saved_model_example", "-s", str(write_json(deployed["root"] / "ours.json", config)))
    assert server.desc("mnist_saved_model_example")["CurrentVersion"] == 2


def test_pmml_takes_and_answers_bare_lists(server, deployed: dict[str, Any]) -> None:
    token = ran(server, deployed, "heart_disease_pmml")
    heart: HeartModel = deployed["heart"]
    resp = server.predict("heart_disease_pmml", json.dumps(heart.rows), token)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    np.testing.assert_allclose([row["p_1"] for row in answer], heart.p_1, rtol=1e-6)  # `[0].p_1`
    missing = {k: v for k, v in heart.rows[0].items() if k != "age"}
    imputed = server.predict("heart_disease_pmml", json.dumps([missing]), token).json()[0]["p_1"]
    assert imputed == pytest.approx(heart.predict([{**heart.rows[0], "age": 0.0}])[0])


def test_new_style_json_with_mounts_deploys_and_reads_the_mounted_files(server, deployed: dict[str, Any]) -> None:
    token = ran(server, deployed, "reader")
    resp = server.predict("reader", b"{}", token)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"weights": "0.5 0.25", "mounts": ["/mnt/code", "/mnt/nas"], "who": "reader"}
    desc = server.desc("reader")
    assert desc["WorkspaceId"] == "ws-123"
    assert {"LabelKey": "team", "LabelValue": "search"} in desc["Labels"]
    assert json.loads(desc["ServiceConfig"])["cloud"]["networking"]["vpc_id"] == "vpc-1"
    listed = json.loads(server.eascmd("ls", "--label", "team=search", "--json").stdout)
    assert [s["ServiceName"] for s in listed] == ["reader"]
    with server.admin() as client:
        events = client.get("/api/v2/services/local/reader/events").json()["Events"]
    assert ("kept, no effect here: cloud.computing.instances, cloud.networking.vpc_id, cloud.networking.vswitch_id"
            in [e["Message"] for e in events])


def test_a_group_formed_by_metadata_group_splits_by_instances(server, deployed: dict[str, Any]) -> None:
    ran(server, deployed, "recs_a")
    ran(server, deployed, "recs_b")
    with server.admin() as client:
        group = client.get("/api/v2/groups/local/recs").json()
    assert group["TrafficMode"] == "auto", group
    answers: Counter[str] = Counter()
    with httpx.Client(timeout=30, headers={"Authorization": group["AccessToken"]}) as http:
        for _ in range(300):
            resp = http.post(f"{server.url}/api/predict/recs", content=b"{}")
            assert resp.status_code == 200, resp.text
            answers[resp.json()["who"]] += 1
    share = answers["recs_b"] / 300  # 2 of the 3 running instances
    assert 0.55 < share < 0.78, answers


def test_a_truly_unknown_key_is_refused_naming_it(server, deployed: dict[str, Any]) -> None:
    bad = write_json(deployed["root"] / "typo.json", {"metadata": {"name": "typo", "instance": 1},
                                                      "processor": "sklearn", "storages": []})
    res = server.eascmd("create", str(bad), check=False)
    assert res.returncode != 0 and "storages: unknown field" in res.stderr, res.stderr
