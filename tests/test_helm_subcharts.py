"""The node chart's vendored subcharts, and the pods they create at run time.

- helm/insitu-node/charts/ holds Zero to JupyterHub and dask-gateway as
  archives; Chart.lock and SUBCHARTS.sha256 pin them (helm/vendor_subcharts.py
  rebuilds them byte for byte).
- The hub's configuration is insitu's own: z2jh's rendered
  jupyterhub_config.py runs here as in the hub pod (tests/z2jh_hub.py) and
  its hub.extraConfig calls insitu.hub.hub_config.configure; the result is
  compared with the same function's local configuration.
- Researchers' server pods (KubeSpawner, configured by the hub) and dask
  cluster pods (dask-gateway's controller, configured by the gateway's
  rendered config) exist only at run time: the dask pods are built by
  dask-gateway's own ``KubeController.make_pod`` from the rendered config, the
  servers' as KubeSpawner 7's ``make_pod`` builds them from the hub's config
  (KubeSpawner is not installed here: it lives in the hub image); both pass
  the same pod-security checks as every rendered pod.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_render import (
    FULL_NODE,
    KUBE_VERSION,
    NODE_CHART,
    REPO,
    SMALL_SITE,
    by_kind,
    merge,
    pod_security_problems,
    render,
    subchart_files,
)
from traitlets.config import Config
from z2jh_hub import load_hub_config

PULL = [{"name": "registry-hospital-a"}]


def _vendor_script() -> Any:
    spec = importlib.util.spec_from_file_location("vendor", REPO / "helm" / "vendor_subcharts.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site_objects() -> list[dict[str, Any]]:
    """examples/small-site.yaml: SSO, a pull secret, every part on."""
    return render(NODE_CHART, yaml.safe_load(SMALL_SITE.read_text()))


@pytest.fixture(scope="module")
def hub_config(site_objects, tmp_path_factory) -> Any:
    folder = tmp_path_factory.mktemp("hub-pod")
    home = folder / "home"
    home.mkdir()
    toml = by_kind(site_objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    (home / "insitu.toml").write_text(toml)
    return load_hub_config(site_objects, folder, home)


# --- the vendored archives ------------------------------------------------------------


def test_archives_are_the_pinned_ones():
    chart = yaml.safe_load((NODE_CHART / "Chart.yaml").read_text())
    lock = yaml.safe_load((NODE_CHART / "Chart.lock").read_text())
    pinned = [{k: d[k] for k in ("name", "version", "repository")} for d in chart["dependencies"]]
    assert lock["dependencies"] == pinned
    assert lock["digest"] == _vendor_script().helm_lock_digest(chart["dependencies"])
    sums = dict(
        reversed(line.split("  ", 1))  # type: ignore[misc]
        for line in (NODE_CHART / "SUBCHARTS.sha256").read_text().splitlines()
    )
    archives = sorted((NODE_CHART / "charts").iterdir())
    assert [f"charts/{a.name}" for a in archives] == sorted(sums)
    for archive in archives:
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == sums[f"charts/{archive.name}"]
    # Each archive is the chart and version Chart.yaml names.
    files = subchart_files("/Chart.yaml")
    for dep in chart["dependencies"]:
        meta = yaml.safe_load(files[f"{dep['name']}/Chart.yaml"])
        assert (meta["name"], str(meta["version"])) == (dep["name"], dep["version"])


def test_dask_gateway_patch_adds_security_contexts_only():
    """The vendored dask-gateway differs from the published 2026.3.0 by the patch alone."""
    pin = _vendor_script().PINS["dask-gateway"]
    assert pin["sha256"] == "f9b0bd1c5b22238b5e42cc07eaa8acbbe4cdeede52c91ddb1f4b092165c0f0af"
    values = yaml.safe_load(subchart_files("dask-gateway/values.yaml")["dask-gateway/values.yaml"])
    for component in ("gateway", "controller", "traefik"):
        assert values[component]["podSecurityContext"] == {}
        assert values[component]["containerSecurityContext"] == {}


def test_kube_version_is_consistent_with_the_subcharts():
    def floor(constraint: str) -> tuple[int, ...]:
        match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)-0", constraint)
        assert match, constraint
        return tuple(int(g) for g in match.groups())

    ours = floor(yaml.safe_load((NODE_CHART / "Chart.yaml").read_text())["kubeVersion"])
    floors = [
        floor(yaml.safe_load(text)["kubeVersion"])
        for text in subchart_files("/Chart.yaml").values()
    ]
    assert ours == max(floors), "the node's kubeVersion must be the strictest of its subcharts'"
    assert (*(int(p) for p in KUBE_VERSION.split(".")), 0) >= ours


# --- one JupyterHub version ---------------------------------------------------------------


def test_hub_image_is_the_z2jh_release_the_chart_pins():
    """docker/hub.Dockerfile builds on z2jh's hub image of the vendored chart's release."""
    z2jh = yaml.safe_load(subchart_files("jupyterhub/Chart.yaml")["jupyterhub/Chart.yaml"])
    values = yaml.safe_load(subchart_files("jupyterhub/values.yaml")["jupyterhub/values.yaml"])
    assert values["hub"]["image"]["tag"] == z2jh["version"]
    dockerfile = (REPO / "docker" / "hub.Dockerfile").read_text()
    base = re.search(r"^ARG HUB_IMAGE=(\S+)$", dockerfile, re.M)
    assert base, "docker/hub.Dockerfile names no HUB_IMAGE"
    assert base.group(1) == f"{values['hub']['image']['name']}:{z2jh['version']}"
    # The JupyterHub that image ships (z2jh's appVersion) is what docs/deploy.md states.
    assert f"JupyterHub {z2jh['appVersion']}" in (REPO / "docs" / "deploy.md").read_text()


def test_one_jupyterhub_version_across_hub_services_and_servers():
    """The hub image's JupyterHub is the one pyproject pins, the lock holds, this
    environment runs, and the node (services) and singleuser images install."""
    import jupyterhub

    z2jh = yaml.safe_load(subchart_files("jupyterhub/Chart.yaml")["jupyterhub/Chart.yaml"])
    version = z2jh["appVersion"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"jupyterhub=={version}" in pyproject["project"]["dependencies"]
    assert jupyterhub.__version__ == version
    for name in (
        "requirements.lock",
        "docker/requirements-node.txt",
        "docker/requirements-singleuser.txt",
    ):
        pins = re.findall(r"^jupyterhub==(\S+)", (REPO / name).read_text(), re.M)
        assert pins == [version], name


# --- the hub: insitu's configure, as the hub pod runs it --------------------------------------


def test_hub_runs_insitus_configure_not_restated_values(hub_config, site_objects):
    secret = by_kind(site_objects, "Secret")["hub"]["data"]
    values = yaml.safe_load(base64.b64decode(secret["values.yaml"]))
    assert (
        values["hub"]["extraConfig"]["insitu"].strip().endswith('configure(c, "/var/lib/insitu")')
    )
    assert not values["hub"].get("loadRoles")
    assert set(values["hub"]["config"]) <= {"JupyterHub"}  # z2jh's own default only
    c = hub_config
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.JupyterHub.authenticator_class == "insitu.hub.authenticator.InsituOIDCAuthenticator"
    assert c.InsituOIDCAuthenticator.token_url.startswith("https://sso.hospital-a.example/")
    assert c.InsituOIDCAuthenticator.admin_groups == {"insitu-admins"}
    assert c.JupyterHub.admin_access is False


def test_hub_config_matches_the_local_configure(hub_config, site_objects, home):
    """Same insitu.toml, spawner local: the same authenticator, roles, scopes and enclave."""
    from insitu.hub.hub_config import configure
    from insitu.hub.services import ServiceContext, plan_services, write_plan

    toml = by_kind(site_objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    home.config_path.write_text(toml.replace('spawner = "kubernetes"', 'spawner = "local"'))
    from insitu.config import load_config

    ctx = ServiceContext(
        home, load_config(home), "http://127.0.0.1:1", "http://127.0.0.1:1/hub/api"
    )
    write_plan(home, plan_services(ctx), {"port": 1, "hub_api_port": 2, "proxy_api_port": 3})
    local = Config()
    configure(local, home.root)
    k8s = hub_config

    auth_keys = set(local.InsituOIDCAuthenticator) - {"insitu_home", "client_secret"}
    assert auth_keys
    for key in sorted(auth_keys):
        assert k8s.InsituOIDCAuthenticator[key] == local.InsituOIDCAuthenticator[key], key
    # (--allow-root only where the local hub runs as root, as here in CI.)
    assert k8s.Spawner.args == [a for a in local.Spawner.args if a != "--allow-root"]
    assert sorted(k8s.Spawner.server_token_scopes) == sorted(local.Spawner.server_token_scopes)

    def user_role(c: Any) -> list[str]:
        (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
        return sorted(role["scopes"])

    assert user_role(k8s) == user_role(local)

    # The same proxied services, the same ones in the Services menu, the same landing page
    # and branded login page (the site's page at /services/site/). (z2jh's idle culler
    # and insitu's operator token have no page.)
    def menu(c: Any) -> dict[str, bool]:
        return {s["name"]: bool(s.get("display", True)) for s in c.JupyterHub.services
                if s.get("url")}  # fmt: skip

    assert menu(k8s) == menu(local)
    assert k8s.JupyterHub.default_url == local.JupyterHub.default_url == "/services/site/"
    assert k8s.JupyterHub.template_vars == local.JupyterHub.template_vars
    assert k8s.JupyterHub.template_paths == local.JupyterHub.template_paths
    user_insitu = k8s.KubeSpawner.environment["INSITU_USER"]
    assert user_insitu is local.Spawner.environment["INSITU_USER"]
    # The researcher's server reaches the same services, by cluster address.
    assert set(local.Spawner.environment) - {"INSITU_USER"} <= set(k8s.KubeSpawner.environment)


# --- run-time pods -----------------------------------------------------------------------


def user_pod(c: Any) -> dict[str, Any]:
    """A researcher's server pod spec as KubeSpawner 7 (objects.make_pod) builds it."""
    spawner = c.KubeSpawner
    pod_sc: dict[str, Any] = {}
    if "fs_gid" in spawner:
        pod_sc["fsGroup"] = spawner.fs_gid
    pod_sc.update(spawner.pod_security_context)
    container_sc = {
        "runAsUser": spawner.uid,
        "allowPrivilegeEscalation": spawner.allow_privilege_escalation,
        **spawner.container_security_context,
    }
    volumes, mounts = spawner.volumes, spawner.volume_mounts
    return {
        "securityContext": pod_sc,
        "automountServiceAccountToken": spawner.automount_service_account_token,
        "imagePullSecrets": spawner.image_pull_secrets if "image_pull_secrets" in spawner else [],
        "volumes": list(volumes.values()) if isinstance(volumes, dict) else volumes,
        "initContainers": list(spawner.init_containers) if "init_containers" in spawner else [],
        "containers": [
            {
                "name": "notebook",
                "securityContext": container_sc,
                "resources": {
                    "requests": {"cpu": spawner.cpu_guarantee, "memory": spawner.mem_guarantee},
                    "limits": {"cpu": spawner.cpu_limit, "memory": spawner.mem_limit},
                },
                "volumeMounts": list(mounts.values()) if isinstance(mounts, dict) else mounts,
            }
        ],
    }


def test_researchers_server_pods_are_locked_down(hub_config):
    spec = user_pod(hub_config)
    problems = pod_security_problems("researcher's server", spec)
    assert not problems, "\n".join(problems)
    assert spec["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]
    assert spec["imagePullSecrets"] == [p["name"] for p in PULL] or spec["imagePullSecrets"] == PULL
    assert not spec["initContainers"]  # no root iptables container (blockWithIptables off)
    text = yaml.safe_dump(spec)
    assert "insitu-state" not in text and "/var/lib/insitu" not in text


def gateway_config(objects: list[dict[str, Any]]) -> Any:
    """dask-gateway-server's config as the gateway pod loads its rendered file."""
    import sys

    code = by_kind(objects, "ConfigMap")["api-dask-gateway"]["data"]["dask_gateway_config.py"]
    path = "/etc/dask-gateway/dask_gateway_config.py"  # where the pod mounts it
    c = Config()
    try:
        exec(compile(code, path, "exec"), {"c": c, "__file__": path})  # noqa: S102 (rendered chart)
    finally:
        while "/etc/dask-gateway" in sys.path:
            sys.path.remove("/etc/dask-gateway")
    return c


def cluster_pod(c: Any, role: str) -> dict[str, Any]:
    """A scheduler or worker pod spec, built by dask-gateway's own controller code."""
    from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
    from dask_gateway_server.backends.kubernetes.controller import KubeController

    cluster = KubeClusterConfig(config=c)
    controller = Config(c)
    # What the controller's own ConfigMap sets: the same instance as the gateway's.
    controller.KubeController.gateway_instance = c.KubeBackend.gateway_instance
    pod = KubeController(config=controller).make_pod(
        "insitu", "c1", cluster, is_worker=role == "worker"
    )
    spec: dict[str, Any] = pod["spec"]
    return spec


@pytest.mark.parametrize("role", ["scheduler", "worker"])
def test_dask_cluster_pods_are_locked_down(site_objects, role):
    c = gateway_config(site_objects)
    spec = cluster_pod(c, role)
    problems = pod_security_problems(f"dask {role}", spec)
    assert not problems, "\n".join(problems)
    assert spec["imagePullSecrets"] == PULL
    mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
    assert "/tmp" in mounts  # read-only root: scratch and spill go to /tmp
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"])


def test_dask_clusters_run_commands_of_the_pinned_distributed(site_objects):
    import shutil
    import subprocess
    import sys

    c = gateway_config(site_objects)
    assert c.ClusterConfig.scheduler_cmd == ["dask", "scheduler"]
    assert c.ClusterConfig.worker_cmd[:2] == ["dask", "worker"]
    dask = Path(sys.executable).parent / "dask"
    assert dask.exists() or shutil.which("dask")
    for command in (c.ClusterConfig.scheduler_cmd, c.ClusterConfig.worker_cmd[:2]):
        done = subprocess.run(
            [str(dask), *command[1:], "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "--dashboard-address" in done.stdout


def test_gateway_accepts_only_the_hubs_service_tokens(site_objects):
    c = gateway_config(site_objects)
    assert c.DaskGateway.authenticator_class == "dask_gateway_server.auth.JupyterHubAuthenticator"
    assert c.JupyterHubAuthenticator.jupyterhub_service_name == "dask-gateway"
    assert c.JupyterHubAuthenticator.jupyterhub_api_url == "http://hub:8081/hub/api"
    api = by_kind(site_objects, "Deployment")["api-dask-gateway"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in api["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": "hub.services.dask-gateway.apiToken",
    }


def test_imagepullsecrets_must_be_set_for_every_chart():
    import helm_python

    values = yaml.safe_load(SMALL_SITE.read_text())
    for path in (
        {"jupyterhub": {"imagePullSecrets": []}},
        {"dask-gateway": {"gateway": {"backend": {"imagePullSecrets": []}}}},
        {"dask-gateway": {"traefik": {"imagePullSecrets": []}}},
    ):
        with pytest.raises(helm_python.HelmRenderError, match="must equal imagePullSecrets"):
            render(NODE_CHART, merge(values, path))


def test_existing_state_claim_reaches_the_hub_too():
    import helm_python

    moved = merge(FULL_NODE, {"persistence": {"state": {"existingClaim": "site-state"}}})
    with pytest.raises(helm_python.HelmRenderError, match='claim "site-state"'):
        render(NODE_CHART, moved)
    hub_volume = [
        {"name": "insitu-state", "persistentVolumeClaim": {"claimName": "site-state"}},
        {"name": "insitu-config", "configMap": {"name": "insitu-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    objects = render(
        NODE_CHART, merge(moved, {"jupyterhub": {"hub": {"extraVolumes": hub_volume}}})
    )
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in objects
        if o["kind"] == "Deployment"
        for v in o["spec"]["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert "site-state" in claims and "insitu-state" not in claims
    assert "insitu-state" not in by_kind(objects, "PersistentVolumeClaim")


def test_rendered_insitu_toml_says_kubernetes(site_objects):
    from insitu.config import parse_config

    toml = by_kind(site_objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    assert parse_config(tomllib.loads(toml)).hub.spawner_kind == "kubernetes"
