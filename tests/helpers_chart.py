"""The Helm chart rendered as `helm template` would, and ways to look at what comes out.

Rendering uses Helm's own Go SDK through the helm-python-sdk wheel (no helm binary);
kubernetes-validate holds the Kubernetes OpenAPI schemas.  Both come with the test extra.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "deploy", "helm", "wq-redis")
EXAMPLES = os.path.join(ROOT, "deploy", "helm", "examples")
CRD_SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deploy_schemas")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def _require(module: str) -> Any:
    """The module, or a skip; in CI (which installs the test extra) a missing one fails."""
    if os.environ.get("CI"):
        return __import__(module)
    return pytest.importorskip(module, reason=f"{module} comes with `pip install -e '.[test]'`")


helm = _require("helm_python")
kubernetes_validate = _require("kubernetes_validate")
jsonschema = _require("jsonschema")
yaml = _require("yaml")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# Chart.yaml's kubeVersion floor (or the oldest schemas there are), and the newest schemas
_SCHEMAS = sorted(kubernetes_validate.utils.all_versions(), key=_version)
KUBE_VERSIONS = (max(_SCHEMAS[0], "1.25.0", key=_version), _SCHEMAS[-1])


def render(values: dict[str, Any] | None = None, release: str = "demo") -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them (values checked by the schema)."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=release, namespace="wq")
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def example(name: str) -> dict[str, Any]:
    with open(os.path.join(EXAMPLES, name)) as handle:
        return yaml.safe_load(handle)


CASES = {"defaults": None, **{os.path.basename(p)[:-5]: p for p in sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")))}}


def case_values(name: str) -> dict[str, Any] | None:
    path = CASES[name]
    return example(os.path.basename(path)) if path else None


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def worker_pools(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Worker Deployments by pool name."""
    return {
        o["metadata"]["labels"]["wq-redis/pool"]: o
        for o in by_kind(objects, "Deployment").values()
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def expanded(c: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as Kubernetes gives it: secretKeyRef values from
    ``secrets`` by (secret, key), and $(VAR) replaced by variables defined earlier."""
    out: dict[str, str] = {}
    for e in c["env"]:
        if "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            out[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m[1], m[0]), e["value"])
    return out


def flags(args: list[str]) -> dict[str, str]:
    """`worker --cores 4 --gpus 1 ...` as {"--cores": "4", ...} (every chart flag takes a value)."""
    assert args[0] == "worker" and len(args) % 2 == 1, args
    return dict(zip(args[1::2], args[2::2], strict=True))
