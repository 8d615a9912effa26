"""A model uploaded with `eascmd upload` serves from oss:// (a real S3-compatible server)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import EasServer, sklearn_service, write_json
from tests.support.s3 import S3Server

pytestmark = pytest.mark.e2e


def test_upload_then_serve_from_oss(iris, tmp_path, monkeypatch):
    s3 = S3Server(tmp_path).start()
    srv = EasServer(tmp_path / "eas-data", env=s3.env)
    try:
        s3.client().create_bucket(Bucket="eas-models")
        for k, v in {**s3.env, "EAS_OSS_UPLOAD_PATH": "oss://eas-models/uploads/"}.items():
            monkeypatch.setenv(k, v)  # eascmd reads the same settings as the server
        srv.start()
        out = srv.eascmd("upload", str(iris["path"])).stdout
        path = next(ln.split("File uploaded: ")[1] for ln in out.splitlines() if "File uploaded" in ln)
        assert path.startswith("oss://eas-models/uploads/")

        srv.eascmd("create", str(write_json(tmp_path / "svc.json", sklearn_service("from_oss", path))))
        info = srv.desc("from_oss")
        resp = srv.predict("from_oss", json.dumps({"instances": iris["rows"]}), info["AccessToken"])
        assert resp.status_code == 200 and resp.json()["predictions"] == iris["expected"]
        cached = list((tmp_path / "eas-data" / "cache" / "models").glob("*/.complete"))
        assert len(cached) == 1, "one download for the controller's check and the instance"

        # A path that does not exist fails fast with the reason, next to the healthy service.
        bad = sklearn_service("missing_oss", "oss://eas-models/uploads/nope/model.joblib")
        res = srv.eascmd("create", str(write_json(tmp_path / "bad.json", bad)), check=False)
        assert res.returncode != 0 and "does not exist" in res.stderr + res.stdout
        assert srv.predict("from_oss", json.dumps({"instances": iris["rows"]}), info["AccessToken"]).status_code == 200
    finally:
        srv.stop()
        s3.stop()
