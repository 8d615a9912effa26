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


def _pods(objs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the chart: eas-server, the Ray head and each worker group."""
    ray = objs["RayCluster/eas-ray"]["spec"]
    pods = {"server": objs["Deployment/eas-server"]["spec"]["template"]["spec"],
            "ray-head": ray["headGroupSpec"]["template"]["spec"]}
    for group in ray["workerGroupSpecs"]:
        pods[f"ray-{group['groupName']}"] = group["template"]["spec"]
    return pods


def assert_hardened(objs: dict[str, dict[str, Any]]) -> None:
    """Non-root, no privilege escalation or capabilities, a read-only root filesystem, and
    an emptyDir or the data volume wherever something must be written."""
    for name, pod in _pods(objs).items():
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0, name
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            sec = container["securityContext"]
            assert sec["readOnlyRootFilesystem"] is True, name
            assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be a writable emptyDir"
            assert _env(container)["HOME"]["value"] == "/tmp", name
    server = _pods(objs)["server"]
    assert {m["mountPath"] for m in server["containers"][0]["volumeMounts"]} == {"/data", "/tmp"}
    assert server["automountServiceAccountToken"] is False
    for group in objs["RayCluster/eas-ray"]["spec"]["workerGroupSpecs"]:
        mounts = {m["mountPath"]: m["name"] for m in group["template"]["spec"]["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/data"]], "instances write their model cache under /data"
    autoscaler = objs["RayCluster/eas-ray"]["spec"].get("autoscalerOptions")
    if autoscaler is not None:
        assert autoscaler["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in autoscaler["volumeMounts"]


def assert_only_predict_is_public(objs: dict[str, dict[str, Any]]) -> None:
    """The gateway Service carries predict only; the management API has its own port and
    a ClusterIP Service; the Ray dashboard is on the head's loopback with no port."""
    container = _container(objs["Deployment/eas-server"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "admin": 8090}
    assert "--port=8080" in container["args"] and "--admin-port=8090" in container["args"]
    assert "--admin-host=0.0.0.0" in container["args"]
    api, gateway = objs["Service/eas-api"]["spec"], objs["Service/eas-gateway"]["spec"]
    assert api["type"] == "ClusterIP" and [p["targetPort"] for p in api["ports"]] == ["admin"]
    assert [p["targetPort"] for p in gateway["ports"]] == ["http"]
    head = objs["RayCluster/eas-ray"]["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    head_ports = head["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in head_ports] == ["gcs"], "no dashboard port: KubeRay's head Service exposes these"
    assert not any(p["containerPort"] == 8265 for p in head_ports)


def assert_ray_token_auth(objs: dict[str, dict[str, Any]]) -> None:
    assert objs["RayCluster/eas-ray"]["spec"]["authOptions"] == {"mode": "token"}
    env = _env(_container(objs["Deployment/eas-server"]))
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    # KubeRay keeps the token in a Secret named after the RayCluster, key auth_token.
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "eas-ray", "key": "auth_token"}


def assert_network_policies(objs: dict[str, dict[str, Any]]) -> None:
    release = {"app.kubernetes.io/name": "eas", "app.kubernetes.io/instance": "eas"}
    server = objs["NetworkPolicy/eas-server"]["spec"]
    assert server["podSelector"]["matchLabels"] == {**release, "app.kubernetes.io/component": "server"}
    assert server["policyTypes"] == ["Ingress"]
    rules = server["ingress"]
    by_port = {r["ports"][0]["port"]: r for r in rules if "ports" in r}
    assert set(by_port) == {"http", "admin"}
    assert "from" not in by_port["http"], "predict is open to clients"
    assert by_port["admin"]["from"] == [{"podSelector": {}}], "the management API: this namespace only"
    rest = [r for r in rules if "ports" not in r]
    assert rest == [{"from": [{"podSelector": {"matchLabels": release}}]}], "Ray traffic: the chart's pods only"
    ray = objs["NetworkPolicy/eas-ray"]["spec"]
    assert ray["podSelector"]["matchExpressions"][0]["values"] == ["ray-head", "ray-worker"]
    assert ray["ingress"] == [{"from": [{"podSelector": {"matchLabels": release}}]}]


def test_helm_lint() -> None:
    _run(str(HELM), "lint", "--strict", str(CHART))
    _run(str(HELM), "lint", "--strict", str(CHART), *POSTGRES_HA)


def test_default_install_sqlite_on_a_volume_validates() -> None:
    out = template()
    result = kubeconform(out)
    assert "Invalid: 0, Errors: 0" in result.stdout, result.stdout
    objs = docs(out)
    assert {k.split("/")[0] for k in objs} == {"ConfigMap", "Secret", "PersistentVolumeClaim", "Service",
                                              "Deployment", "RayCluster", "NetworkPolicy"}
    server = objs["Deployment/eas-server"]
    assert server["spec"]["replicas"] == 1 and server["spec"]["strategy"]["type"] == "Recreate"
    container = _container(server)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"] == "2Gi"
    env = _env(container)
    assert "EAS_STORE" not in env, "SQLite under the data dir by default"
    assert env["EAS_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "eas-credentials"
    volume = {v["name"]: v for v in server["spec"]["template"]["spec"]["volumes"]}["data"]
    assert volume["persistentVolumeClaim"]["claimName"] == "eas-data"
    assert len(objs["Secret/eas-credentials"]["stringData"]["EAS_ACCESS_KEY"]) == 32

    ray = objs["RayCluster/eas-ray"]["spec"]
    assert ray["enableInTreeAutoscaling"] is True
    workers = ray["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    assert ray["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert objs["ConfigMap/eas"]["data"]["EAS_RAY_HEAD"] == "eas-ray-head-svc.serving.svc:6379"
    assert objs["Service/eas-gateway"]["spec"]["type"] == "LoadBalancer"
    assert_only_predict_is_public(objs)
    assert_hardened(objs)
    assert_ray_token_auth(objs)
    assert_network_policies(objs)


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
    gateway_labels = objs["Service/eas-gateway"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= gateway_labels.items(), "scrapes the Service with port http"
    assert_only_predict_is_public(objs)
    assert_hardened(objs)
    assert_ray_token_auth(objs)
    assert_network_policies(objs)


def test_refusals_and_that_validation_catches_mistakes() -> None:
    res = _run(str(HELM), "template", "eas", str(CHART), "--set", "server.replicas=2", check=False)
    assert res.returncode != 0 and "needs store.type=postgresql" in res.stderr
    res = _run(str(HELM), "template", "eas", str(CHART), "--set", "store.type=postgresql", check=False)
    assert res.returncode != 0 and "store.postgresql.url" in res.stderr
    # A public Ray dashboard is refused.
    res = _run(str(HELM), "template", "eas", str(CHART), "--set", "ray.head.rayStartParams.dashboard-host=0.0.0.0",
               check=False)
    assert res.returncode != 0 and "dashboard-host must stay on loopback" in res.stderr
    # The schemas are really applied: a misspelt RayCluster field, a bad probe, a misspelt
    # NetworkPolicy field and an unknown auth mode fail.
    bad = template().replace("enableInTreeAutoscaling", "enableInTreeAutoscale")
    assert kubeconform(bad, check=False).returncode != 0
    bad = template().replace("periodSeconds: 5", "periodSeconds: five", 1)
    assert kubeconform(bad, check=False).returncode != 0
    bad = template().replace("policyTypes:", "policyType:", 1)
    assert kubeconform(bad, check=False).returncode != 0
    bad = template().replace("mode: token", "mode: password", 1)
    assert kubeconform(bad, check=False).returncode != 0


def test_options_open_what_the_operator_names() -> None:
    """Token auth and the NetworkPolicies can be turned off (an older KubeRay, a CNI without
    policies); the gateway and DIRECT callers can be narrowed or widened by peers."""
    out = template("--set", "ray.tokenAuth=false", "--set", "networkPolicy.enabled=false")
    assert "Invalid: 0, Errors: 0" in kubeconform(out).stdout
    objs = docs(out)
    assert "authOptions" not in objs["RayCluster/eas-ray"]["spec"]
    assert "RAY_AUTH_MODE" not in _env(_container(objs["Deployment/eas-server"]))
    assert not [k for k in objs if k.startswith("NetworkPolicy/")]
    assert_hardened(objs)

    out = template("--set-json", 'networkPolicy.gatewayFrom=[{"ipBlock":{"cidr":"10.0.0.0/8"}}]',
                   "--set-json", 'networkPolicy.directFrom=[{"namespaceSelector":{"matchLabels":{"team":"ml"}}}]')
    assert "Invalid: 0, Errors: 0" in kubeconform(out).stdout
    objs = docs(out)
    rules = {r["ports"][0]["port"]: r for r in objs["NetworkPolicy/eas-server"]["spec"]["ingress"] if "ports" in r}
    assert rules["http"]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert objs["NetworkPolicy/eas-ray"]["spec"]["ingress"][0]["from"][1] == {
        "namespaceSelector": {"matchLabels": {"team": "ml"}}}

    # Metrics scraped from the admin listener go through the (internal) api Service.
    objs = docs(template("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.port=admin"))
    monitor = objs["ServiceMonitor/eas"]["spec"]
    assert monitor["endpoints"][0]["port"] == "admin"
    assert monitor["selector"]["matchLabels"].items() <= objs["Service/eas-api"]["metadata"]["labels"].items()


def test_dockerfile_and_entrypoint() -> None:
    text = (REPO / "Dockerfile").read_text()
    for path in ("pyproject.toml", "eas", "eascmd", "processors", "docker/entrypoint.sh"):
        assert path in text and (REPO / path).exists()
    assert '".[all]"' in text
    _run("bash", "-n", str(REPO / "docker" / "entrypoint.sh"))
