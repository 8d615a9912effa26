"""JSON schemas for offline kubeconform runs, from packages (no download at validation time).

    k8s_schemas.py kubernetes WHEEL OUT_DIR VERSION   Kubernetes schemas from the PyPI
        package kubernetes-validate: its strict "local" schemas for VERSION, with their
        `$ref: /api/_definitions.json#...` pointed at OUT_DIR's copy (a file:// URL).
    k8s_schemas.py crd CRD_DIR OUT_DIR                CRD YAMLs (KubeRay's config/crd/bases)
        to <group>/<kind>_<version>.json, as kubeconform's openapi2jsonschema.py writes them:
        the openAPIV3Schema, int-or-string made explicit, unknown fields refused.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml


def kubernetes(wheel: str, out: str, version: str) -> None:
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    target = Path(out).resolve()
    target.mkdir(parents=True, exist_ok=True)
    # kubeconform resolves a relative $ref against the schema's plain path, which fails:
    # an absolute file:// URL works (the cache is rebuilt if the checkout moves).
    definitions = (target / "_definitions.json").as_uri()
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not name.startswith(prefix) or not name.endswith(".json"):
                continue
            text = zf.read(name).decode().replace('"/api/_definitions.json#', f'"{definitions}#')
            (target / name[len(prefix):]).write_text(text)
            count += 1
    if count == 0:
        raise SystemExit(f"no schemas for Kubernetes {version} in {wheel}")
    print(f"{count} Kubernetes {version} schemas in {target}")


def _fix(node: Any) -> Any:
    """openAPIV3Schema -> JSON schema: int-or-string, and no unknown fields where none are declared."""
    if isinstance(node, list):
        return [_fix(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fix(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


def crd(crd_dir: str, out: str) -> None:
    count = 0
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"].lower()
            for ver in spec["versions"]:
                schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                if not schema:
                    continue
                schema = _fix(schema)
                # apiVersion/kind/metadata are checked by the API server, not declared in CRDs.
                schema.setdefault("properties", {}).setdefault("metadata", {"type": "object"})
                dest = Path(out) / group / f"{kind}_{ver['name']}.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps(schema, indent=1))
                count += 1
    if count == 0:
        raise SystemExit(f"no CRD schemas found in {crd_dir}")
    print(f"{count} CRD schemas in {out}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "kubernetes":
        kubernetes(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "crd":
        crd(*sys.argv[2:])
    else:
        raise SystemExit(__doc__)
