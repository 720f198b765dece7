"""helm/insitu-node rendered by Helm's own engine, validated against Kubernetes 1.33.

No cluster: the whole node is rendered offline, with its vendored subcharts
(Zero to JupyterHub, dask-gateway) on, every manifest is validated against the
Kubernetes schemas (unknown fields refused), and the rendered objects are
checked for what the site's security depends on: who mounts the stores and
the private area, who may talk to whom, pod security, and where secrets come
from. tests/test_helm_subcharts.py checks the vendored archives themselves and
the pods the hub and the gateway create at run time.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from helm_render import (
    FULL_NODE,
    KUBE_VERSION,
    NODE_CHART,
    SMALL_SITE,
    by_kind,
    chart_values,
    component,
    connection_allowed,
    egress_allowed,
    insitu_only,
    merge,
    pod_security_problems,
    pod_specs,
    render,
    validate,
)

from insitu.config import parse_config

MINIMAL = {"site": {"name": "hospital-a"}}
INSITU_CLAIMS = {"insitu-state", "insitu-stores", "insitu-private", "insitu-fingerprints"}
FINGERPRINTS = "/var/lib/insitu/private/fingerprints"  # fingerprints_dir() of the node home


@pytest.fixture(scope="module")
def node_objects() -> list[dict[str, Any]]:
    """The node with every part switched on."""
    return render(NODE_CHART, FULL_NODE)


def _claims(pod: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """volume name -> (claim name, read-only at the volume level)."""
    out = {}
    for vol in pod["spec"].get("volumes", []):
        pvc = vol.get("persistentVolumeClaim")
        if pvc:
            out[vol["name"]] = (pvc["claimName"], bool(pvc.get("readOnly")))
    return out


def _mounts(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [
        m
        for c in spec.get("initContainers", []) + spec["containers"]
        for m in c.get("volumeMounts", [])
    ]


# --- the chart renders, lints and validates -------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(MINIMAL, id="defaults"),
        pytest.param(FULL_NODE, id="everything-on"),
        pytest.param(merge(FULL_NODE, {"ingest": {"schedule": "0 2 * * *"}}), id="cron-ingest"),
        pytest.param(
            merge(
                FULL_NODE,
                {"ingest": {"source": {"existingClaim": "", "url": "dicomweb://pacs/wado"}}},
            ),
            id="dicomweb-ingest",
        ),
        pytest.param(merge(MINIMAL, {"networkPolicy": {"enabled": False}}), id="no-netpol"),
    ],
)
def test_every_manifest_validates(values):
    objects = render(NODE_CHART, values)
    assert objects
    validate(objects)


def test_small_site_example_renders_and_validates():
    values = yaml.safe_load(SMALL_SITE.read_text())
    objects = render(NODE_CHART, values)
    validate(objects)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim"} <= kinds
    # The example is a real deployment: SSO configured, secrets by reference.
    toml = by_kind(objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    hub = parse_config(tomllib.loads(toml)).hub
    assert (hub.spawner, hub.authenticator) == ("kubernetes", "oidc")
    assert hub.oidc_token_url.startswith("https://")
    env = chart_values(NODE_CHART, values)["jupyterhub"]["hub"]["extraEnv"]
    assert env["INSITU_OIDC_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"]
    # One pull secret reaches every pod (the run-time pods: test_helm_subcharts.py).
    for owner, pod in pod_specs(objects):
        secrets = pod["spec"].get("imagePullSecrets")
        assert secrets == [{"name": "registry-hospital-a"}], owner["metadata"]["name"]


def test_lint_finds_no_errors():
    import helm_python

    report = helm_python.lint(NODE_CHART, FULL_NODE, kube_version=f"v{KUBE_VERSION}.0")
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors, errors  # no warning either: the subcharts are vendored


def test_subcharts_are_pinned_vendored_and_switchable():
    import helm_python

    chart = yaml.safe_load((NODE_CHART / "Chart.yaml").read_text())
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert set(deps) == {"jupyterhub", "dask-gateway"}
    assert deps["jupyterhub"]["repository"] == "https://hub.jupyter.org/helm-chart/"
    assert deps["dask-gateway"]["repository"] == ""  # patched: vendored only
    for name, dep in deps.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+(\+insitu\.\d+)?", dep["version"]), name
        assert dep["condition"] == f"{name}.enabled"
    assert [d["status"] for d in helm_python.dependency_list(NODE_CHART)] == ["ok", "ok"]
    # z2jh 4.4.0 or newer: no release with the known CSRF and denial-of-service advisories.
    major, minor, _patch = (int(p) for p in deps["jupyterhub"]["version"].split("."))
    assert (major, minor) >= (4, 4)
    # Without the subcharts (a hub installed separately) the node still renders.
    objects = render(NODE_CHART, MINIMAL, subcharts=False)
    assert objects == insitu_only(objects)


# --- volumes: the stores and the private area ---------------------------------


def test_stores_read_write_only_in_ingest_read_only_in_gate_and_supernode(node_objects):
    seen: dict[str, bool] = {}
    for owner, pod in pod_specs(insitu_only(node_objects)):
        claims = _claims(pod)
        for mount in _mounts(pod):
            claim, vol_ro = claims.get(mount["name"], (None, False))
            if claim != "insitu-stores":
                continue
            read_only = bool(mount.get("readOnly")) and vol_ro
            seen[component(owner)] = read_only
    assert seen == {"ingest": False, "gate": True, "supernode": True}


def test_private_area_and_site_key_only_in_ingest(node_objects):
    for owner, pod in pod_specs(insitu_only(node_objects)):
        claims = {c for c, _ in _claims(pod).values()}
        secrets = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
        private_mounts = [
            m
            for m in _mounts(pod)
            if "/private" in m["mountPath"] and m["mountPath"] != FINGERPRINTS
        ]
        if component(owner) == "ingest":
            assert "insitu-private" in claims
            assert "insitu-site-key" in secrets
        else:
            assert "insitu-private" not in claims, component(owner)
            assert "insitu-site-key" not in secrets, component(owner)
            assert not private_mounts, component(owner)


def test_fingerprint_index_is_read_only_in_airlock_and_supernode_only(node_objects):
    """Their disclosure checks read private/fingerprints (else the index is empty there and
    pixel provenance checks nothing); only the ingest writes it; nobody else sees it."""
    seen: dict[str, bool] = {}
    for owner, pod in pod_specs(insitu_only(node_objects)):
        claims = _claims(pod)
        for container in pod["spec"]["containers"]:
            for mount in container.get("volumeMounts", []):
                claim, vol_ro = claims.get(mount["name"], (None, False))
                if claim != "insitu-fingerprints":
                    continue
                assert mount["mountPath"] == FINGERPRINTS and "subPath" not in mount
                seen[component(owner)] = bool(mount.get("readOnly")) and vol_ro
    assert seen == {"ingest": False, "airlock": True, "supernode": True}


def test_user_pods_get_no_node_volume():
    values = chart_values(NODE_CHART, merge(FULL_NODE, {"jupyterhub": {"enabled": True}}))
    single = values["jupyterhub"]["singleuser"]
    storage = single["storage"]
    assert storage["type"] in ("dynamic", "none")  # a home per researcher, nothing shared
    text = yaml.safe_dump(
        [storage.get("extraVolumes"), storage.get("extraVolumeMounts"), single.get("extraEnv")]
    )
    for claim in INSITU_CLAIMS:
        assert claim not in text
    assert "/var/lib/insitu" not in text and "fingerprints" not in text  # nor the index
    # dask workers and schedulers run researchers' code too.
    backend = values["dask-gateway"]["gateway"]["backend"]
    for role in ("scheduler", "worker"):
        pod = backend[role].get("extraPodConfig", {})
        assert all(set(v) == {"name", "emptyDir"} for v in pod.get("volumes", [])), role
        assert pod.get("automountServiceAccountToken") is False
    # Researchers reach data through the gate's URL, never a path.
    assert single["extraEnv"]["INSITU_GATE_URL"].startswith("http://insitu-gate:")


def test_no_rendered_pod_outside_the_node_mounts_node_volumes(node_objects):
    """Every pod of the node, the subcharts' included: only these mount node volumes."""
    allowed = {
        "insitu-state": {"access", "gate", "airlock", "site", "ingest", "supernode", "hub"},
        "insitu-stores": {"gate", "ingest", "supernode"},
        "insitu-private": {"ingest"},
        "insitu-fingerprints": {"ingest", "airlock", "supernode"},
    }
    seen = set()
    for owner, pod in pod_specs(node_objects):
        labels = owner["metadata"].get("labels") or {}
        who = labels.get("app.kubernetes.io/component") or labels.get("component")
        for claim, _ in _claims(pod).values():
            if claim in allowed:
                assert who in allowed[claim], (claim, owner["metadata"]["name"])
                seen.add((claim, who))
    assert ("insitu-state", "hub") in seen


def test_claims_survive_uninstall(node_objects):
    claims = by_kind(insitu_only(node_objects), "PersistentVolumeClaim")
    assert set(claims) == INSITU_CLAIMS
    for claim in claims.values():
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_existing_claims_are_used_not_created():
    objects = render(
        NODE_CHART,
        merge(FULL_NODE, {"persistence": {"stores": {"existingClaim": "trial-stores"}}}),
    )
    assert "insitu-stores" not in by_kind(objects, "PersistentVolumeClaim")
    gate = by_kind(objects, "Deployment")["insitu-gate"]["spec"]["template"]
    assert ("trial-stores", True) in _claims(gate).values()


# --- network policies ------------------------------------------------------------

USER = {"component": "singleuser-server", "app": "jupyterhub", "release": "site"}
HUB = {"labels": {"component": "hub", "app": "jupyterhub"}}
PROXY = {"labels": {"component": "proxy", "app": "jupyterhub"}}
TRAEFIK = {
    "labels": {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/component": "traefik"}
}
GW_API = {
    "labels": {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/component": "gateway"}
}
SCHEDULER = {
    "app.kubernetes.io/name": "dask-gateway",
    "app.kubernetes.io/component": "dask-scheduler",
}
WORKER = {"app.kubernetes.io/name": "dask-gateway", "app.kubernetes.io/component": "dask-worker"}
DNS = {
    "labels": {"k8s-app": "kube-dns"},
    "namespace": "kube-system",
    "namespaceLabels": {"kubernetes.io/metadata.name": "kube-system"},
}
INTERNET = {"ip": "8.8.8.8"}
OTHER_SITE = {"ip": "198.51.100.20"}
COORDINATOR = {"ip": "203.0.113.10"}


def _insitu(name: str) -> dict[str, Any]:
    return {
        "labels": {
            "app.kubernetes.io/name": "insitu",
            "app.kubernetes.io/instance": "site",
            "app.kubernetes.io/component": name,
        }
    }


def _policies(objects):
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("source", [USER, SCHEDULER, WORKER], ids=["user", "scheduler", "worker"])
def test_researcher_code_reaches_only_hub_gate_and_dask(node_objects, source):
    pols = _policies(node_objects)
    assert egress_allowed(pols, source, HUB["labels"] and HUB, 8081)
    assert egress_allowed(pols, source, _insitu("gate"), 8000)
    assert egress_allowed(pols, source, DNS, 53, "UDP")
    for dest, port in [
        (INTERNET, 443),
        (INTERNET, 80),
        (OTHER_SITE, 9092),
        (COORDINATOR, 9092),
        (_insitu("supernode"), 9094),
        (_insitu("ingest"), 8000),
        (HUB, 22),
        ({"labels": {"component": "hub"}, "namespace": "other-site"}, 8081),
        ({"labels": {"k8s-app": "kube-dns"}, "namespace": "kube-system"}, 443),
    ]:
        assert not egress_allowed(pols, source, dest, port), (source, dest, port)


def test_user_pods_reach_services_and_their_gateway(node_objects):
    pols = _policies(node_objects)
    for name in ("access", "airlock"):
        assert egress_allowed(pols, USER, _insitu(name), 8000)
    assert egress_allowed(pols, USER, TRAEFIK, 8000)
    # Not the gateway API directly, nor other researchers' schedulers.
    assert not egress_allowed(pols, USER, GW_API, 8000)
    assert not egress_allowed(pols, USER, {"labels": SCHEDULER}, 8786)


def test_dask_clusters_reach_each_other_and_the_gateway_api(node_objects):
    pols = _policies(node_objects)
    assert egress_allowed(pols, WORKER, {"labels": SCHEDULER}, 8786)
    assert egress_allowed(pols, SCHEDULER, {"labels": WORKER}, 40123)
    assert egress_allowed(pols, SCHEDULER, GW_API, 8000)


def _cluster(name: str) -> dict[str, Any]:
    """The DaskCluster object dask-gateway's controller sees for a new cluster."""
    return {
        "apiVersion": "gateway.dask.org/v1alpha1",
        "kind": "DaskCluster",
        "metadata": {"name": name, "namespace": "insitu", "uid": f"uid-{name}"},
    }


def _cluster_pod(name: str, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "dask-gateway",
        "app.kubernetes.io/component": f"dask-{role}",
        "gateway.dask.org/instance": "dask-gateway",
        "gateway.dask.org/cluster": name,
    }


def test_researchers_dask_clusters_are_isolated_from_each_other(node_objects):
    """Two researchers' clusters: each talks to itself, never to the other."""
    from insitu.hub.dask_controller import cluster_network_policy

    per_cluster = [cluster_network_policy(_cluster(n), "dask-gateway") for n in ("ada", "bob")]
    validate([{**p, "metadata": {**p["metadata"], "annotations": {}}} for p in per_cluster])
    pols = _policies(node_objects) + per_cluster
    ada_s, ada_w = _cluster_pod("ada", "scheduler"), _cluster_pod("ada", "worker")
    bob_s, bob_w = _cluster_pod("bob", "scheduler"), _cluster_pod("bob", "worker")
    assert connection_allowed(pols, ada_w, ada_s, 8786)
    assert connection_allowed(pols, ada_s, ada_w, 40123)
    for source, dest, port in [
        (bob_w, ada_s, 8786),
        (bob_w, ada_s, 8787),  # the dashboard (plain HTTP) too
        (bob_s, ada_w, 40123),
        (ada_w, bob_w, 8787),
        (USER, ada_s, 8786),  # researchers go through dask-gateway's proxy
    ]:
        assert not connection_allowed(pols, source, dest, port), (source, dest, port)
    # dask-gateway's proxy and API still reach every cluster's scheduler.
    assert connection_allowed(pols, TRAEFIK["labels"], ada_s, 8786)
    assert connection_allowed(pols, GW_API["labels"], bob_s, 8788)
    # Without insitu's controller there would be no per-cluster policy: then not even
    # a cluster's own workers could reach its scheduler (the chart runs it, see values).
    assert not connection_allowed(_policies(node_objects), ada_w, ada_s, 8786)
    dg = chart_values(NODE_CHART, MINIMAL)["dask-gateway"]["controller"]
    assert dg["command"] == ["python", "-m", "insitu.hub.dask_controller"]
    role = by_kind(node_objects, "Role")["insitu-dask-controller"]
    assert role["rules"] == [
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "create"],
        }
    ]


def test_dns_egress_is_cluster_dns_only(node_objects):
    """Every pod insitu's policies restrict resolves names through kube-dns and nothing else."""
    pols = _policies(node_objects)
    for source in (USER, SCHEDULER, WORKER, _insitu("supernode")["labels"]):
        assert egress_allowed(pols, source, DNS, 53, "UDP")
        assert egress_allowed(pols, source, DNS, 53, "TCP")
        other_pod_in_kube_system = {**DNS, "labels": {"k8s-app": "metrics-server"}}
        assert not egress_allowed(pols, source, other_pod_in_kube_system, 53, "UDP")
        assert not egress_allowed(pols, source, {"ip": "8.8.8.8"}, 53, "UDP")
        assert not egress_allowed(pols, source, {"ip": "169.254.20.10"}, 53, "UDP")


def test_supernode_reaches_only_the_coordinator(node_objects):
    pols = _policies(node_objects)
    node = _insitu("supernode")["labels"]
    assert egress_allowed(pols, node, COORDINATOR, 9092)
    assert egress_allowed(pols, node, DNS, 53, "UDP")
    for dest, port in [
        (COORDINATOR, 22),
        (INTERNET, 443),
        (OTHER_SITE, 9092),
        (HUB, 8081),
        (_insitu("gate"), 8000),
    ]:
        assert not egress_allowed(pols, node, dest, port), (dest, port)
    policy = by_kind(node_objects, "NetworkPolicy")["insitu-supernode"]
    assert policy["spec"]["ingress"] == []
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_services_accept_only_hub_proxy_and_researchers(node_objects):
    pols = by_kind(node_objects, "NetworkPolicy")
    gate = pols["insitu-gate"]["spec"]
    assert gate["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gate"
    sources = [peer["podSelector"] for rule in gate["ingress"] for peer in rule["from"]]
    assert {"matchLabels": {"component": "proxy"}} in sources
    assert {"matchLabels": {"component": "singleuser-server"}} in sources
    assert all("ipBlock" not in peer for rule in gate["ingress"] for peer in rule["from"])
    # access and airlock are not for dask workers.
    access_sources = [p for r in pols["insitu-access"]["spec"]["ingress"] for p in r["from"]]
    assert not any("matchExpressions" in p["podSelector"] for p in access_sources)
    # The landing page is for browsers (through the proxy): no researcher's pod reaches it.
    site = pols["insitu-site"]["spec"]
    site_sources = [p["podSelector"] for r in site["ingress"] for p in r["from"]]
    assert {"matchLabels": {"component": "singleuser-server"}} not in site_sources
    assert {"matchLabels": {"component": "proxy"}} in site_sources
    # The ingest takes no connections and, by default, reaches only DNS.
    ingest = pols["insitu-ingest"]["spec"]
    assert ingest["ingress"] == []
    assert not egress_allowed(list(pols.values()), _insitu("ingest")["labels"], INTERNET, 443)


def test_z2jh_user_policy_opens_nothing_more():
    """NetworkPolicies add up: z2jh's own user-pod policy must not allow more."""
    values = chart_values(NODE_CHART, MINIMAL)["jupyterhub"]["singleuser"]["networkPolicy"]
    assert values["enabled"] is True
    assert values["egress"] == []
    rules = values["egressAllowRules"]
    assert not {k for k, v in rules.items() if v}  # DNS: insitu's narrower rule
    # ... and no privileged iptables init container in researchers' pods.
    single = chart_values(NODE_CHART, MINIMAL)["jupyterhub"]["singleuser"]
    assert single["cloudMetadata"]["blockWithIptables"] is False
    assert single["allowPrivilegeEscalation"] is False


def test_supernode_needs_coordinator_cidrs_with_network_policies():
    import helm_python

    values = merge(FULL_NODE, {"supernode": {"coordinator": {"cidrs": []}}})
    with pytest.raises(helm_python.HelmValuesError, match="/supernode/coordinator/cidrs"):
        render(NODE_CHART, values)


# --- pod security -----------------------------------------------------------------


def test_every_pod_is_locked_down(node_objects):
    """Every rendered pod, the subcharts' included (their run-time pods:
    test_helm_subcharts.py)."""
    workloads = list(pod_specs(node_objects))
    names = {o["metadata"]["name"] for o, _ in workloads}
    assert {"hub", "proxy", "api-dask-gateway", "controller-dask-gateway"} <= names
    assert {"traefik-dask-gateway", "insitu-gate", "insitu-supernode"} <= names
    problems = [
        p
        for owner, pod in workloads
        for p in pod_security_problems(f"{owner['kind']}/{owner['metadata']['name']}", pod["spec"])
    ]
    assert not problems, "\n".join(problems)


def test_insitu_pods_have_no_api_token_and_a_writable_tmp(node_objects):
    workloads = list(pod_specs(insitu_only(node_objects)))
    assert {component(o) for o, _ in workloads} == {
        "access",
        "gate",
        "airlock",
        "site",
        "ingest",
        "supernode",
    }
    for owner, pod in workloads:
        spec = pod["spec"]
        where = component(owner)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            # A read-only root still needs a writable /tmp.
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where


def test_schema_refuses_root():
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=r"/security/runAsUser"):
        render(NODE_CHART, merge(MINIMAL, {"security": {"runAsUser": 0}}))


# --- secrets ------------------------------------------------------------------------

# Keys whose value would be a secret, and keys that only name a Secret (or a key in one).
SECRETISH = re.compile(r"(token|password|secret|private.?key|credential|cookie)$", re.I)
REFERENCES = {
    "existingSecret",
    "caSecret",
    "keySecret",
    "tokenSecretName",
    "apiTokenFromSecretName",
    "apiTokenFromSecretKey",
    "secretKey",
    "caKey",
    "privateKeyKey",
    "secretName",
}


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


@pytest.mark.parametrize("source", ["values.yaml", "examples/small-site.yaml"])
def test_no_secret_value_in_values(source):
    values = yaml.safe_load((NODE_CHART / source).read_text())
    for path, value in _walk(values):
        leaf = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
        if not SECRETISH.search(leaf) or leaf in REFERENCES:
            continue
        assert value in (None, "", False), f"{source}: {path} holds a secret value"
    # No hub service carries a token: z2jh generates them into its Secret.
    for name, service in values.get("jupyterhub", {}).get("hub", {}).get("services", {}).items():
        assert "apiToken" not in service and "api_token" not in service, name


def test_secrets_come_from_existing_secrets_by_reference(node_objects):
    assert not by_kind(insitu_only(node_objects), "Secret"), "the chart must not hold secrets"
    refs = set()
    for _owner, pod in pod_specs(insitu_only(node_objects)):
        for vol in pod["spec"]["volumes"]:
            if "secret" in vol:
                refs.add(vol["secret"]["secretName"])
        for container in pod["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
                else:
                    assert not SECRETISH.search(env["name"]) or env["name"].endswith("_URL")
    assert refs == {"hub", "insitu-site-key", "flower-ca", "flower-node-key"}


def test_services_take_their_hub_token_from_z2jh_secret(node_objects):
    deployments = by_kind(node_objects, "Deployment")
    for name in ("access", "gate", "airlock", "site"):
        env = {
            e["name"]: e
            for e in deployments[f"insitu-{name}"]["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
        }
        ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "hub", "key": f"hub.services.{name}.apiToken"}
        assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == f"/services/{name}/"
        assert env["INSITU_HOME"]["value"] == "/var/lib/insitu"


# --- the hub registration matches the rendered services ------------------------------


def test_hub_services_point_at_rendered_services(node_objects):
    values = chart_values(NODE_CHART, MINIMAL)["jupyterhub"]["hub"]
    services = by_kind(node_objects, "Service")
    for name in ("access", "gate", "airlock", "site"):
        url = values["services"][name]["url"]
        port = services[f"insitu-{name}"]["spec"]["ports"][0]["port"]
        assert url == f"http://insitu-{name}:{port}"
    gateway = services["traefik-dask-gateway"]["spec"]["ports"][0]["port"]
    assert values["services"]["dask-gateway"]["url"] == "http://traefik-dask-gateway" and (
        gateway == 80
    )
    # Roles and scopes are not restated in values: insitu.hub.hub_config sets them
    # (test_helm_subcharts.py loads the hub's configuration as z2jh does).
    assert not values.get("loadRoles")
    assert "Spawner" not in values["config"]


def test_insitu_toml_is_valid_for_the_project_config_reader(node_objects):
    config_map = by_kind(node_objects, "ConfigMap")["insitu-config"]
    config = parse_config(tomllib.loads(config_map["data"]["insitu.toml"]), "rendered insitu.toml")
    assert config.site.name == "hospital-a"
    assert config.site.title == "Hospital A"
    assert config.policy.min_cell_count == 10
    assert config.policy.nk_k == 0.9
    assert config.compute.worker_memory == "2 GiB"


def test_config_sections_come_from_values():
    objects = render(
        NODE_CHART,
        merge(
            MINIMAL,
            {
                "config": {
                    "policy": {"min_cell_count": 5},
                    "extraSections": {"federation": {"name": "locat", "rounds": 3}},
                }
            },
        ),
    )
    text = by_kind(objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    config = parse_config(tomllib.loads(text))
    assert config.policy.min_cell_count == 5
    assert config.extra["federation"] == {"name": "locat", "rounds": 3}


# --- the schema and the templates refuse bad values with a clear message ----------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"site": {"name": 5}}, r"/site/name.*(got number, want string|want string)"),
        ({"services": {"gate": {"port": "eighty"}}}, r"/services/gate/port.*want integer"),
        ({"networkPolicy": {"enabled": "yes"}}, r"/networkPolicy/enabled.*want boolean"),
        ({"image": {"pullPolicy": "Sometimes"}}, r"/image/pullPolicy.*Always.*IfNotPresent.*Never"),
        ({"site": {"name": "Hospital A"}}, r"/site/name.*pattern"),
        (
            {"persistence": {"stores": {"accessModes": ["ReadWriteSometimes"]}}},
            r"/persistence/stores/accessModes",
        ),
        ({"sitename": "x"}, r"sitename"),
    ],
    ids=["name-type", "port-type", "bool-type", "enum", "name-pattern", "access-mode", "typo"],
)
def test_schema_rejects_wrong_values(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=message) as err:
        render(NODE_CHART, merge(MINIMAL, values))
    assert "insitu-node" in str(err.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"site": {"name": None}}, r"missing propert.*'name'"),
        ({"site": {"name": ""}}, r"/site/name"),
        ({"supernode": {"coordinator": {"address": ""}}}, r"/supernode/coordinator/address"),
        ({"supernode": {"dataset": ""}}, r"/supernode/dataset"),
        ({"supernode": {"tls": {"caSecret": ""}}}, r"/supernode/tls/caSecret"),
        ({"ingest": {"dataset": ""}}, r"/ingest/dataset"),
        ({"siteKey": {"existingSecret": ""}}, r"/siteKey/existingSecret"),
    ],
    ids=[
        "site-name-missing",
        "site-name-empty",
        "coordinator",
        "sn-dataset",
        "tls",
        "ingest-dataset",
        "site-key",
    ],
)
def test_schema_rejects_missing_required_values(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(NODE_CHART, merge(FULL_NODE, values))


def test_supernode_off_needs_no_coordinator():
    objects = render(NODE_CHART, merge(MINIMAL, {"supernode": {"enabled": False}}))
    assert "insitu-supernode" not in by_kind(objects, "Deployment")


def test_ingest_needs_exactly_one_source():
    import helm_python

    both = {"ingest": {"source": {"existingClaim": "dicom", "url": "dicomweb://pacs"}}}
    neither = {"ingest": {"source": {"existingClaim": "", "url": ""}}}
    for values in (both, neither):
        with pytest.raises(helm_python.HelmRenderError, match="exactly one of existingClaim"):
            render(NODE_CHART, merge(FULL_NODE, values))


def test_ingest_is_a_cronjob_when_scheduled():
    objects = render(NODE_CHART, merge(FULL_NODE, {"ingest": {"schedule": "0 2 * * *"}}))
    cron = by_kind(objects, "CronJob")["insitu-ingest"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] == 3600
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == job["template"]["spec"]["activeDeadlineSeconds"] > 0
    assert not by_kind(objects, "Job")
    one_off = by_kind(render(NODE_CHART, FULL_NODE), "Job")
    assert list(one_off) == ["insitu-ingest-r1"]
    assert one_off["insitu-ingest-r1"]["spec"]["activeDeadlineSeconds"] == 86400


def test_services_may_reach_the_hub_through_z2jh_policy(node_objects):
    """z2jh's hub policy admits only labelled pods; the services check tokens there."""
    for name in ("access", "gate", "airlock", "site"):
        pod = by_kind(node_objects, "Deployment")[f"insitu-{name}"]["spec"]["template"]
        assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    for name in ("ingest", "supernode"):
        _owner, pod = next(
            p for p in pod_specs(insitu_only(node_objects)) if component(p[0]) == name
        )
        assert "hub.jupyter.org/network-access-hub" not in pod["metadata"]["labels"]
    # dask-gateway's API checks tokens with the hub too; the chart labels it the same way,
    # and z2jh's rendered hub policy admits that label on the hub's port.
    api = by_kind(node_objects, "Deployment")["api-dask-gateway"]["spec"]["template"]
    assert api["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    hub_policy = by_kind(node_objects, "NetworkPolicy")["hub"]["spec"]
    assert {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}} in [
        peer.get("podSelector") for rule in hub_policy["ingress"] for peer in rule["from"]
    ]
