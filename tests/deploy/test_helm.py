"""The Helm chart (helm/eas): helm lint, helm template, and kubeconform against the
Kubernetes and KubeRay CRD schemas, offline. `make deploy-tools` puts the tools and the
schemas under .tools/ (helm and kubeconform built from their Go modules, schemas from
the kubernetes-validate wheel and the KubeRay Go module)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "eas"
TOOLS = REPO / ".tools"
HELM, KUBECONFORM = TOOLS / "bin" / "helm", TOOLS / "bin" / "kubeconform"
K8S_VERSION = "1.31.0"

POSTGRES_HA = [
    "--set", "store.type=postgresql",
    "--set", "store.postgresql.url=postgresql://eas:secret@db.example:5432/eas",
    "--set", "server.replicas=3",
    "--set", "persistence.enabled=false",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "objectStore.endpoint=oss-cn-hangzhou-internal.aliyuncs.com",
    "--set", "objectStore.accessKeyId=AKID", "--set", "objectStore.accessKeySecret=SECRET",
    "--set", "ray.workers.customResources.gpu_pool=1",
    "--set", "ray.workers.maxReplicas=10",
]


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    missing = [p for p in (HELM, KUBECONFORM, TOOLS / "schemas" / "kuberay" / "ray.io" / "raycluster_v1.json")
               if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(map(str, missing))}: run 'make deploy-tools'")


def _run(*cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120, cwd=REPO)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def template(*values: str) -> str:
    return _run(str(HELM), "template", "eas", str(CHART), "--namespace", "serving", *values).stdout


def kubeconform(manifests: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(
        str(KUBECONFORM), "-strict", "-summary", "-output", "text", "-kubernetes-version", K8S_VERSION,
        "-schema-location", f"{TOOLS}/schemas/kubernetes/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        "-schema-location", f"{TOOLS}/schemas/kuberay/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
        # No package ships the prometheus-operator CRDs: ServiceMonitor is checked below instead.
        "-skip", "ServiceMonitor",
        "-", input=manifests, check=check)


def docs(manifests: str) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(manifests) if d}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def test_helm_lint() -> None:
    _run(str(HELM), "lint", "--strict", str(CHART))
    _run(str(HELM), "lint", "--strict", str(CHART), *POSTGRES_HA)


def test_default_install_sqlite_on_a_volume_validates() -> None:
    out = template()
    result = kubeconform(out)
    assert "Invalid: 0, Errors: 0" in result.stdout, result.stdout
    objs = docs(out)
    assert {k.split("/")[0] for k in objs} == {"ConfigMap", "Secret", "PersistentVolumeClaim", "Service",
                                              "Deployment", "RayCluster"}
    server = objs["Deployment/eas-server"]
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"
    container = _container(server)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] == "2Gi"
    env = _env(container)
    assert "EAS_STORE" not in env, "SQLite under the data dir by default"
    assert env["EAS_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "eas-credentials"
    volume = server["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == "eas-data"
    assert len(objs["Secret/eas-credentials"]["stringData"]["EAS_ACCESS_KEY"]) == 32

    ray = objs["RayCluster/eas-ray"]["spec"]
    assert ray["enableInTreeAutoscaling"] is True
    workers = ray["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    assert ray["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert objs["ConfigMap/eas"]["data"]["EAS_RAY_HEAD"] == "eas-ray-head-svc.serving.svc:6379"
    assert objs["Service/eas-gateway"]["spec"]["type"] == "LoadBalancer"


def test_postgresql_ha_install_validates() -> None:
    out = template(*POSTGRES_HA)
    result = kubeconform(out)
    assert "Invalid: 0, Errors: 0" in result.stdout and "Skipped: 1" in result.stdout, result.stdout
    objs = docs(out)
    assert "PersistentVolumeClaim/eas-data" not in objs
    server = objs["Deployment/eas-server"]
    assert server["spec"]["replicas"] == 3 and "strategy" not in server["spec"]
    env = _env(_container(server))
    assert env["EAS_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "eas-store", "key": "EAS_STORE"}
    assert objs["Secret/eas-store"]["stringData"]["EAS_STORE"].startswith("postgresql://")
    assert env["EAS_OSS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "eas-objectstore"
    worker = objs["RayCluster/eas-ray"]["spec"]["workerGroupSpecs"][0]
    assert worker["rayStartParams"]["resources"] == '{"gpu_pool":1}'
    assert "EAS_OSS_ENDPOINT" in _env(worker["template"]["spec"]["containers"][0])
    monitor = objs["ServiceMonitor/eas"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "15s"}
    assert monitor["spec"]["selector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]


def test_refusals_and_that_validation_catches_mistakes() -> None:
    res = _run(str(HELM), "template", "eas", str(CHART), "--set", "server.replicas=2", check=False)
    assert res.returncode != 0 and "needs store.type=postgresql" in res.stderr
    res = _run(str(HELM), "template", "eas", str(CHART), "--set", "store.type=postgresql", check=False)
    assert res.returncode != 0 and "store.postgresql.url" in res.stderr
    # The schemas are really applied: a misspelt RayCluster field and a bad probe fail.
    bad = template().replace("enableInTreeAutoscaling", "enableInTreeAutoscale")
    assert kubeconform(bad, check=False).returncode != 0
    bad = template().replace("periodSeconds: 5", "periodSeconds: five", 1)
    assert kubeconform(bad, check=False).returncode != 0


def test_dockerfile_and_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    for path in ("pyproject.toml", "eas", "eascmd", "processors", "docker/entrypoint.sh"):
        assert path in text and (REPO / path).exists()
    assert '".[all]"' in text
    _run("bash", "-n", str(REPO / "docker" / "entrypoint.sh"))
