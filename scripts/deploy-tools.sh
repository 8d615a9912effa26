#!/usr/bin/env bash
# Tools for validating the Helm chart offline, cached under .tools/ (gitignored):
#   helm and kubeconform, built from their Go modules through the Go module proxy;
#   Kubernetes JSON schemas from the PyPI package kubernetes-validate;
#   KubeRay CRD schemas from the Go module github.com/ray-project/kuberay/ray-operator.
# Idempotent: each piece is skipped when present. Versions are pinned here.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PY="${PY:-.venv/bin/python}"
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBERAY_VERSION=v1.5.1
K8S_VALIDATE_VERSION=1.37.0
K8S_VERSION=1.31.0
mkdir -p "$TOOLS/bin" "$TOOLS/schemas"

if ! command -v go >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q golang-go >/dev/null; else
    echo "deploy-tools: Go is needed to build helm and kubeconform (apt-get install golang-go)" >&2; exit 1; fi
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
if [ ! -x "$TOOLS/bin/helm" ]; then
  echo "==> building helm $HELM_VERSION (Go module proxy; a few minutes the first time)"
  GOBIN="$TOOLS/bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if [ ! -x "$TOOLS/bin/kubeconform" ]; then
  echo "==> building kubeconform $KUBECONFORM_VERSION"
  GOBIN="$TOOLS/bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
fi
if ! grep -qs "file://$TOOLS/schemas/kubernetes/_definitions.json" "$TOOLS/schemas/kubernetes/deployment-apps-v1.json"; then
  echo "==> Kubernetes $K8S_VERSION schemas (kubernetes-validate $K8S_VALIDATE_VERSION)"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps -d "$tmp" "kubernetes-validate==$K8S_VALIDATE_VERSION"
  rm -rf "$TOOLS/schemas/kubernetes"
  "$PY" scripts/k8s_schemas.py kubernetes "$tmp"/kubernetes_validate-*.whl "$TOOLS/schemas/kubernetes" "$K8S_VERSION"
  rm -rf "$tmp"
fi
if [ ! -f "$TOOLS/schemas/kuberay/ray.io/raycluster_v1.json" ]; then
  echo "==> KubeRay $KUBERAY_VERSION CRD schemas"
  dir=$(go mod download -json "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
        | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$TOOLS/schemas/kuberay"
  "$PY" scripts/k8s_schemas.py crd "$dir/config/crd/bases" "$TOOLS/schemas/kuberay"
fi
