"""Helpers: rendering the Helm charts with Helm's own engine (helm-python-sdk), offline.

The subcharts (Zero to JupyterHub, dask-gateway) cannot be fetched here, so
every render switches them off by their Chart.yaml conditions; what the
parent passes to them is checked on the merged values instead.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
NODE_CHART = REPO / "helm" / "insitu-node"
COORDINATOR_CHART = REPO / "helm" / "insitu-coordinator"
SMALL_SITE = NODE_CHART / "examples" / "small-site.yaml"
KUBE_VERSION = "1.33"

SUBCHARTS_OFF: dict[str, Any] = {
    "jupyterhub": {"enabled": False},
    "dask-gateway": {"enabled": False},
}

# A node with every part switched on: services, a scheduled ingest, the SuperNode.
FULL_NODE: dict[str, Any] = {
    "site": {"name": "hospital-a", "title": "Hospital A"},
    "siteKey": {"existingSecret": "insitu-site-key"},
    "ingest": {
        "enabled": True,
        "dataset": "locat",
        "title": "LOCAT trial CT",
        "source": {"existingClaim": "dicom-export", "subPath": "locat"},
    },
    "supernode": {
        "enabled": True,
        "dataset": "locat",
        "coordinator": {"address": "fl.example.org:9092", "cidrs": ["203.0.113.10/32"]},
        "tls": {"caSecret": "flower-ca"},
        "auth": {"keySecret": "flower-node-key"},
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge values (override wins; None is kept: Helm deletes that key)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(chart: Path, values: dict[str, Any], *, subcharts: bool = False) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt left out), as dicts."""
    import helm_python

    if not subcharts:
        values = merge(values, SUBCHARTS_OFF) if chart == NODE_CHART else values
    with helm_python.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name="site", namespace="insitu", is_install=True)
    objects: list[dict[str, Any]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                doc["metadata"]["annotations"]["test/template"] = template
                objects.append(doc)
    return objects


def chart_values(chart: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's defaults coalesced with ``values``, as an install would use them."""
    import helm_python

    with helm_python.Chart.load(chart) as loaded:
        return loaded.merge_values(values or {})


def validate(objects: list[dict[str, Any]]) -> None:
    """Each object against the Kubernetes OpenAPI schemas, unknown fields refused."""
    import kubernetes_validate

    for obj in objects:
        clean = copy.deepcopy(obj)
        clean["metadata"]["annotations"].pop("test/template", None)
        if not clean["metadata"]["annotations"]:
            del clean["metadata"]["annotations"]
        kubernetes_validate.validate(clean, KUBE_VERSION, strict=True)


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner object, pod template) for every workload."""
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]
        elif kind == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# --- a small NetworkPolicy evaluator (what the API server's CNI would enforce) ---


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and value in expr["values"])
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _peer_matches(peer: dict[str, Any], dest: dict[str, Any], namespace: str) -> bool:
    if "ipBlock" in peer:
        if "ip" not in dest:
            return False
        ip = ipaddress.ip_address(dest["ip"])
        if ip not in ipaddress.ip_network(peer["ipBlock"]["cidr"]):
            return False
        return not any(ip in ipaddress.ip_network(e) for e in peer["ipBlock"].get("except", []))
    if "labels" not in dest:
        return False  # pod/namespace selectors never match an outside address
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], dest.get("namespaceLabels", {})):
            return False
    elif dest.get("namespace", namespace) != namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], dest["labels"])


def egress_allowed(
    policies: list[dict[str, Any]],
    source_labels: dict[str, str],
    dest: dict[str, Any],
    port: int,
    protocol: str = "TCP",
    namespace: str = "insitu",
) -> bool:
    """Whether ``policies`` let a pod with ``source_labels`` reach ``dest`` on ``port``.

    ``dest`` is {"labels": ..., "namespace": ..., "namespaceLabels": ...} for a
    pod or {"ip": "..."} for an address outside the cluster.
    """
    applying = [
        p
        for p in policies
        if "Egress" in p["spec"].get("policyTypes", [])
        and _selects(p["spec"]["podSelector"], source_labels)
    ]
    if not applying:
        return True  # no egress policy selects the pod: Kubernetes allows everything
    for policy in applying:
        for rule in policy["spec"].get("egress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("port") in (None, port) and p.get("protocol", "TCP") == protocol
                for p in ports
            ):
                continue
            peers = rule.get("to")
            if not peers or any(_peer_matches(peer, dest, namespace) for peer in peers):
                return True
    return False
