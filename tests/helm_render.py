"""Helpers: rendering the Helm charts with Helm's own engine (helm-python-sdk), offline.

The node chart's subcharts (Zero to JupyterHub, dask-gateway) are vendored as
archives in helm/insitu-node/charts/ (see Chart.lock); Helm's loader reads
them from there as they are, so every render here is the whole node, as
`helm install` would create it. Custom resources (traefik's IngressRoute and
Middleware) are validated against the CRDs the vendored charts ship.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
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


def render(chart: Path, values: dict[str, Any], *, subcharts: bool = True) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt left out), as dicts.

    ``subcharts=False`` switches Zero to JupyterHub and dask-gateway off (a
    node beside a hub installed separately).
    """
    import helm_python

    if not subcharts and chart == NODE_CHART:
        values = merge(values, SUBCHARTS_OFF)
    with helm_python.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name="site", namespace="insitu", is_install=True)
    objects: list[dict[str, Any]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                meta = doc.setdefault("metadata", {})
                if not meta.get("annotations"):
                    meta["annotations"] = {}
                doc["metadata"]["annotations"]["test/template"] = template
                objects.append(doc)
    return objects


def chart_values(chart: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's defaults coalesced with ``values``, as an install would use them."""
    import helm_python

    with helm_python.Chart.load(chart) as loaded:
        return loaded.merge_values(values or {})


def subchart_files(suffix: str = "") -> dict[str, bytes]:
    """Files of the vendored subchart archives ("jupyterhub/values.yaml": bytes, ...)."""
    import tarfile

    files: dict[str, bytes] = {}
    for archive in sorted((NODE_CHART / "charts").glob("*.tgz")):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(suffix):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    files[member.name] = handle.read()
    return files


_VALID: set[str] = set()


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of every CRD the subcharts ship."""
    schemas = {}
    for name, data in subchart_files(".yaml").items():
        if "/crds/" not in name:
            continue
        for crd in yaml.safe_load_all(data):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD schema that refuses unknown fields (the API server would drop them silently)."""
    out = dict(schema)
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    return out


def validate(objects: list[dict[str, Any]]) -> None:
    """Each object against the Kubernetes OpenAPI schemas, unknown fields refused.

    Custom resources against their CRD's schema (as the API server would).
    """
    import jsonschema
    import kubernetes_validate

    crds = _crd_schemas()
    for obj in objects:
        clean = copy.deepcopy(obj)
        clean["metadata"]["annotations"].pop("test/template", None)
        if not clean["metadata"]["annotations"]:
            del clean["metadata"]["annotations"]
        key = json.dumps(clean, sort_keys=True)
        if key in _VALID:
            continue  # the same object in another render (most subchart objects)
        crd = crds.get((clean["apiVersion"], clean["kind"]))
        if crd is not None:
            kubernetes_validate.validate(  # the metadata as any object's
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": clean["metadata"]},
                KUBE_VERSION,
                strict=True,
            )
            jsonschema.validate(clean, _strict(crd))
        else:
            kubernetes_validate.validate(clean, KUBE_VERSION, strict=True)
        _VALID.add(key)


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


# --- pod security (what every pod of the node must satisfy) -------------------------------

# Containers whose root file system stays writable, and why (docs/deploy.md says the same).
WRITABLE_ROOT: dict[str, str] = {}


def pod_security_problems(where: str, spec: dict[str, Any]) -> list[str]:
    """What ``spec`` (a pod spec) lacks of the node's pod-security rules, one line each.

    Non-root, seccomp RuntimeDefault, all capabilities dropped, no privilege
    escalation, a read-only root file system (unless WRITABLE_ROOT names the
    container), requests and limits for CPU-less memory at least, no host access.
    """
    problems: list[str] = []
    pod = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{where}: {key}")
    if any("hostPath" in v for v in spec.get("volumes") or []):
        problems.append(f"{where}: a hostPath volume")
    containers = (spec.get("initContainers") or []) + spec["containers"]
    for container in containers:
        name = f"{where}/{container['name']}"
        sc = container.get("securityContext") or {}

        def setting(key: str, sc: dict[str, Any] = sc) -> Any:
            return sc[key] if key in sc else pod.get(key)

        if setting("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            problems.append(f"{name}: runs as user 0")
        if (setting("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = sc.get("capabilities") or {}
        if caps.get("drop") != ["ALL"] or caps.get("add"):
            problems.append(f"{name}: capabilities are not exactly drop [ALL]")
        if sc.get("readOnlyRootFilesystem") is not True and container["name"] not in WRITABLE_ROOT:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            if not (resources.get(kind) or {}).get("memory"):
                problems.append(f"{name}: no memory {kind[:-1]}")
        if not (resources.get("requests") or {}).get("cpu"):
            problems.append(f"{name}: no cpu request")
    return problems


def insitu_only(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of the node chart's own templates (not of its subcharts)."""
    return [
        o
        for o in objects
        if o["metadata"]["annotations"]["test/template"].startswith("insitu-node/templates/")
    ]


def ingress_allowed(
    policies: list[dict[str, Any]],
    dest_labels: dict[str, str],
    source: dict[str, Any],
    port: int,
    protocol: str = "TCP",
    namespace: str = "insitu",
) -> bool:
    """Whether ``policies`` let a pod with ``dest_labels`` accept ``source`` on ``port``.

    ``source`` as ``dest`` of :func:`egress_allowed` (a pod's labels or an address).
    """
    applying = [
        p
        for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], dest_labels)
    ]
    if not applying:
        return True
    for policy in applying:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(
                p.get("port") in (None, port) and p.get("protocol", "TCP") == protocol
                for p in ports
            ):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(peer, source, namespace) for peer in peers):
                return True
    return False


def connection_allowed(
    policies: list[dict[str, Any]],
    source_labels: dict[str, str],
    dest_labels: dict[str, str],
    port: int,
) -> bool:
    """Pod to pod in one namespace: the source's egress and the destination's ingress."""
    return egress_allowed(policies, source_labels, {"labels": dest_labels}, port) and (
        ingress_allowed(policies, dest_labels, {"labels": source_labels}, port)
    )
