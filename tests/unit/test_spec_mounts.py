"""`storage[]` mounts made real on a node (eas/sources/mounts.py), read by a processor,
and a mount that cannot be made failing the service with the reason.

Real parts only: a real git repository (file://, made here), real directories, the
real instance runtime loading real user code; the control-plane test runs the real
server app over the in-memory backend (tests/support/backend.py, the only stand-in).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from eas.instance.runtime import ServiceRuntime
from eas.sources import ModelSourceError, mounts
from processors.base import ModelLoadError, Request
from tests.support.platform import Harness, api_fixture  # noqa: F401 - registers the `api` fixture

READER = '''
import json, os

class Reader:
    def initialize(self):
        with open(os.path.join(self.model_path, "weights.txt")) as f:
            self.weights = f.read().strip()
        with open(os.path.join(os.path.dirname(__file__), "VERSION")) as f:
            self.version = f.read().strip()

    def process(self, data):
        scratch = self.mounts["/mnt/scratch"]
        with open(os.path.join(scratch, "seen"), "a") as f:
            f.write("x")
        return json.dumps({"weights": self.weights, "code": self.version,
                           "mounts": sorted(self.mounts)}), 200
'''


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c",
                           "init.defaultBranch=main", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def make_repo(root: Path, files: dict[str, str]) -> Path:
    """A git repository with one commit on branch main holding `files`."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    commit(repo, files)
    return repo


def commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed (git mounts need it on every node)")
    return make_repo(tmp_path / "src", {"app.py": READER, "VERSION": "v1"})


def test_git_mount_clones_the_branch_and_follows_a_push(repo: Path, tmp_path: Path) -> None:
    entry = [{"mount_path": "/mnt/code/", "git": {"repo": f"file://{repo}", "branch": "main"}}]
    first = mounts.prepare(entry, tmp_path / "cache")
    local = Path(first.paths["/mnt/code"])
    assert (local / "VERSION").read_text() == "v1" and not (local / ".git").exists()
    assert first.local("/mnt/code/app.py") == str(local / "app.py")
    assert mounts.prepare(entry, tmp_path / "cache").paths == first.paths, "same head: the cached clone"
    commit(repo, {"VERSION": "v2"})
    moved = Path(mounts.prepare(entry, tmp_path / "cache").paths["/mnt/code"])
    assert moved != local and (moved / "VERSION").read_text() == "v2"
    with pytest.raises(ModelSourceError, match=r"storage\[0\] \(/mnt/code/\): git repo .* has no branch 'nope'"):
        mounts.prepare([{"mount_path": "/mnt/code/", "git": {"repo": f"file://{repo}", "branch": "nope"}}],
                       tmp_path / "cache")


def test_paths_under_a_mount_map_to_its_local_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    m = mounts.prepare([{"mount_path": "/mnt/data", "nfs": {"path": str(data)}},
                        {"mount_path": "/mnt/data/deeper", "nfs": {"path": str(tmp_path)}}], tmp_path / "cache")
    assert m.local("/mnt/data/model.onnx") == f"{data}/model.onnx"
    assert m.local("file:///mnt/data") == str(data)
    assert m.local("/mnt/data/deeper/x") == f"{tmp_path}/x", "the longest mount_path wins"
    assert m.local("/mnt/database/x") == "/mnt/database/x", "a prefix of a name is not a mount"
    assert m.local("https://example.com/m.tar.gz") == "https://example.com/m.tar.gz"


def test_empty_dirs_are_per_instance_and_removed(tmp_path: Path) -> None:
    entry = [{"mount_path": "/mnt/scratch", "empty_dir": {}}]
    assert mounts.prepare(entry, tmp_path, scratch=False).paths == {}, "the controller makes nothing per instance"
    m = mounts.prepare(entry, tmp_path)
    scratch = Path(m.paths["/mnt/scratch"])
    assert scratch.is_dir() and list(scratch.iterdir()) == []
    m.close()
    assert not scratch.exists()


@pytest.mark.parametrize("entry, shm_gb, words", [
    ({"mount_path": "/mnt/nas", "nfs": {"path": "/no/such/export"}}, None,
     "storage[0] (/mnt/nas): nfs /no/such/export is not a directory on this node"),
    ({"mount_path": "/mnt/nas", "nfs": {"server": "x.nas.example.com", "path": "/"}}, None,
     "mount its exports on every node and set EAS_NFS_ROOT"),
    ({"mount_path": "/mnt/img", "image": {"image": "registry/x:1", "path": "/data"}}, None,
     "this platform runs no containers"),
    ({"mount_path": "/dev/shm", "empty_dir": {"medium": "memory", "size_limit": 1_000_000}}, None,
     "storage[0] (/dev/shm): empty_dir.size_limit asks for 1000000 GB, but /dev/shm on this node has a size of"),
    ({"mount_path": "/mnt/git", "git": {"repo": "--upload-pack=x"}}, None, "use an https://, ssh://"),
    ({"mount_path": "/mnt/x", "empty_dir": {}}, 1_000_000, "metadata.shm_size asks for 1000000 GB"),
])
def test_a_mount_that_cannot_be_made_says_why(entry: dict, shm_gb: int | None, words: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mounts.NFS_ROOT_ENV, raising=False)
    with pytest.raises(ModelSourceError) as err:
        mounts.prepare([entry], tmp_path, shm_gb=shm_gb)
    assert words in str(err.value)


def test_nfs_with_a_server_reads_where_the_operator_mounted_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "nfs" / "x.nas.example.com" / "models"
    export.mkdir(parents=True)
    monkeypatch.setenv(mounts.NFS_ROOT_ENV, str(tmp_path / "nfs"))
    m = mounts.prepare([{"mount_path": "/mnt/nas", "nfs": {"server": "x.nas.example.com", "path": "/models"}}],
                       tmp_path)
    assert m.paths == {"/mnt/nas": str(export)}


def test_the_processor_reads_mounted_files(repo: Path, tmp_path: Path) -> None:
    """processor_path in a git mount, model_path in an nfs mount, a scratch empty_dir: the
    real runtime loads the user's code from the clone and it reads the model directory."""
    data = tmp_path / "nas"
    data.mkdir()
    (data / "weights.txt").write_text("0.5 0.25")
    spec = {"metadata": {"name": "reader", "instance": 1}, "processor_type": "python",
            "processor_path": "/mnt/code", "processor_entry": "app.py", "model_path": "/mnt/nas",
            "storage": [{"mount_path": "/mnt/code", "git": {"repo": f"file://{repo}", "branch": "main"}},
                        {"mount_path": "/mnt/nas", "nfs": {"path": str(data), "readOnly": True}},
                        {"mount_path": "/mnt/scratch", "empty_dir": {"size_limit": 1}}]}
    runtime = ServiceRuntime(spec, str(tmp_path / "cache"))
    scratch = Path(runtime.mounts.paths["/mnt/scratch"])
    try:
        answer = runtime.processor.predict(Request(b"{}"))
        assert json.loads(answer.body) == {"weights": "0.5 0.25", "code": "v1",
                                           "mounts": ["/mnt/code", "/mnt/nas", "/mnt/scratch"]}
        assert (scratch / "seen").read_text() == "x"
    finally:
        runtime.close()
    assert not scratch.exists()
    with pytest.raises(ModelLoadError, match=r"storage\[0\] \(/mnt/code\): git repo"):
        ServiceRuntime({**spec, "storage": [{"mount_path": "/mnt/code",
                                             "git": {"repo": f"file://{tmp_path}/none", "branch": "main"}}]},
                       str(tmp_path / "cache"))


def test_a_mount_that_cannot_be_made_fails_the_service_at_once(api: Harness, tmp_path: Path) -> None:
    """The controller prepares mounts before it deploys: the reason is the Failed message."""
    missing = tmp_path / "gone"
    api.create({"metadata": {"name": "nas", "instance": 1}, "processor": "sklearn", "model_path": "/mnt/nas/m.joblib",
                "storage": [{"mount_path": "/mnt/nas", "nfs": {"path": str(missing)}}]})
    api.reconcile_until(lambda: api.status("nas") == "Failed", "nas to fail")
    assert api.describe("nas")["Message"] == f"storage[0] (/mnt/nas): nfs {missing} is not a directory on this node"
    assert not api.cluster.calls, "nothing was deployed"
    # Once the export is there, start deploys it; the model path is read through the mount.
    missing.mkdir()
    (missing / "m.joblib").write_bytes(b"not loaded by MemoryBackend")
    api.ok("PUT", api.svc("nas", "/start"))
    api.reconcile_until(lambda: api.status("nas") == "Running", "nas to run")
    assert os.path.isdir(missing)
