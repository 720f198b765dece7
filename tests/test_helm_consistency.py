"""The chart deploys the same processes, settings and environment as `insitu up`.

The hub's configuration is not repeated: the chart's hub runs insitu's own
configure (tests/test_helm_subcharts.py). Values cannot import Python, so the
chart still states what the pods run (service commands, the researchers'
environment by cluster address, the gateway's cluster options); these tests
hold the two together: change one and the other must follow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helm_render import FULL_NODE, NODE_CHART, by_kind, chart_values, render
from traitlets.config import Config

from insitu.config import load_config
from insitu.hub.services import SERVICE_PROVIDERS, ServiceContext, plan_services


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return chart_values(NODE_CHART, {"site": {"name": "hospital-a"}})


@pytest.fixture
def local_services(home):
    ctx = ServiceContext(
        home=home,
        config=load_config(home),
        hub_url="http://127.0.0.1:8765",
        hub_api_url="http://127.0.0.1:8765/hub/api",
    )
    return {s.name: s for s in plan_services(ctx, SERVICE_PROVIDERS)}


def test_service_commands_and_readiness_match_local(local_services, values):
    deployments = by_kind(render(NODE_CHART, FULL_NODE), "Deployment")
    checked = 0
    for name, service in local_services.items():
        if name not in values["services"]:
            continue  # e.g. dask-gateway: its own chart runs it
        chart = values["services"][name]
        assert service.command[0] == sys.executable
        assert chart["command"][1:] == service.command[1:], name
        assert chart["readyPath"] == service.ready_path, name
        container = deployments[f"insitu-{name}"]["spec"]["template"]["spec"]["containers"][0]
        probe = container["readinessProbe"]["httpGet"]["path"]
        assert probe == f"{service.prefix}{service.ready_path}"
        checked += 1
    assert checked >= 2


def test_researchers_get_the_same_environment_keys(local_services, values):
    extra_env = values["jupyterhub"]["singleuser"]["extraEnv"]
    for name, service in local_services.items():
        for key, local_url in service.user_environment.items():
            assert key in extra_env, f"{name} gives user servers {key}; the chart does not"
            if local_url.startswith("http://127.0.0.1"):
                # Same path under the service's prefix, another host.
                suffix = local_url.split("/", 3)[3]
                assert extra_env[key].endswith(suffix), key


def test_gateway_cluster_options_give_workers_the_researchers_token(values):
    gateway = values["dask-gateway"]["gateway"]
    code = gateway["extraConfig"]["insitu"]
    c = Config()
    exec(compile(code, "dask-gateway extraConfig", "exec"), {"c": c})  # noqa: S102 (our own values)
    options = c.Backend.cluster_options
    assert [f.field for f in options.fields] == ["gate_token"]

    class User:
        name = "rita"

    env = options.handler(type("O", (), {"gate_token": "tok"})(), User())["environment"]
    assert env == {
        "INSITU_GATE_URL": values["jupyterhub"]["singleuser"]["extraEnv"]["INSITU_GATE_URL"],
        "INSITU_USER": "rita",
        "JUPYTERHUB_API_TOKEN": "tok",
    }
    assert c.ClusterConfig.cluster_max_workers == values["config"]["compute"]["max_workers"]
    assert gateway["prefix"] == "/services/dask-gateway"
    assert values["jupyterhub"]["singleuser"]["extraEnv"]["DASK_GATEWAY__ADDRESS"].endswith(
        gateway["prefix"]
    )


def test_hub_mounts_the_node_home_but_never_stores_or_private(values):
    hub = values["jupyterhub"]["hub"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in hub["extraVolumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"insitu-state"}
    paths = {m["mountPath"] for m in hub["extraVolumeMounts"]}
    assert not any(p.endswith(("/stores", "/private")) for p in paths)
    assert hub["extraEnv"]["INSITU_HOME"] == "/var/lib/insitu"
    # The hub runs as insitu's user, so the shared node home stays readable to both.
    assert hub["containerSecurityContext"]["runAsUser"] == values["security"]["runAsUser"]
    assert hub["podSecurityContext"]["fsGroup"] == values["security"]["fsGroup"]


# --- federation: the chart runs in the foreground what `insitu federation` starts ----


class _CapturedProcess:
    """Stands in for the Flower processes: records the command, says it is up."""

    commands: ClassVar[list[list[str]]] = []

    def __init__(self, command: list[str], stdout: Any = None, **_kwargs: Any) -> None:
        self.commands.append([str(c) for c in command])
        self.pid = self.pgid = 2**22 + len(self.commands)  # above any real pid here
        if stdout is not None:
            stdout.write(b"INFO :      SuperNode ID: 1\n")
            stdout.flush()

    def poll(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


def _normalise(command: list[str], paths: dict[str, str]) -> list[str]:
    out = []
    for word in command:
        if word == sys.executable:
            word = "python"
        elif word.startswith(str(Path(sys.executable).parent) + "/"):
            word = Path(word).name
        for local, pod in paths.items():
            word = word.replace(local, pod)
        out.append(word)
    return out


def _captured(monkeypatch, start: Any) -> list[str]:
    processes = pytest.importorskip("insitu.federation.processes")
    _CapturedProcess.commands = []
    monkeypatch.setattr(processes.subprocess, "Popen", _CapturedProcess)
    start(processes)
    (command,) = _CapturedProcess.commands
    return command


def test_supernode_runs_what_insitu_federation_join_starts(home, tmp_path, monkeypatch):
    ca, key = tmp_path / "ca.crt", tmp_path / "supernode.key"
    ca.write_text("CA")
    key.write_text("KEY")
    local = _captured(
        monkeypatch,
        lambda p: p.start_site(
            home,
            "fl.example.org:9092",
            "locat",
            root_certificates=str(ca),
            auth_private_key=str(key),
            runtime_port=9094,
            alias="locat-federated",
        ),
    )
    paths = {
        str(home.root): "/var/lib/insitu",
        str(ca): "/etc/insitu/flower-tls/ca.crt",
        str(key): "/etc/insitu/flower-auth/supernode.key",
    }
    values = {
        "site": {"name": "test-site"},  # the home fixture's site
        "supernode": {**FULL_NODE["supernode"], "datasetAlias": "locat-federated"},
    }
    objects = render(NODE_CHART, {**FULL_NODE, **values})
    pod = by_kind(objects, "Deployment")["insitu-supernode"]["spec"]["template"]["spec"]
    chart, expected = pod["containers"][0]["command"], _normalise(local, paths)
    assert chart == expected, f"chart:\n{chart}\ninsitu federation join:\n{expected}"


def test_superlink_runs_what_insitu_federation_coordinator_starts(home, tmp_path, monkeypatch):
    import socket

    from helm_render import COORDINATOR_CHART

    files = {}
    for name in ("tls.crt", "tls.key", "ca.crt"):
        files[name] = tmp_path / name
        files[name].write_text(name)
    with socket.socket() as listener:  # the "SuperLink" port the start waits for
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        local = _captured(
            monkeypatch,
            lambda p: p.start_coordinator(
                home,
                f"127.0.0.1:{port}",
                tls=p.TlsOptions(
                    str(files["tls.crt"]), str(files["tls.key"]), str(files["ca.crt"])
                ),
                node_auth=True,
            ),
        )
    from insitu.federation.approvals import federation_dir

    paths = {f"{federation_dir(home)}/coordinator/state.db": "/var/lib/superlink/state.db"}
    paths |= {str(f): f"/etc/insitu/tls/{n}" for n, f in files.items()}
    paths |= {str(home.root): "/var/lib/superlink/home"}
    paths |= {"127.0.0.1": "0.0.0.0", str(port): "9092"}
    objects = render(
        COORDINATOR_CHART,
        {
            "federation": "locat",
            "tls": {"existingSecret": "flower-superlink-tls"},
            "networkPolicy": {"allowedCIDRs": ["198.51.100.0/28"]},
        },
    )
    pod = by_kind(objects, "Deployment")["insitu-superlink"]["spec"]["template"]["spec"]
    assert sorted(pod["containers"][0]["command"]) == sorted(_normalise(local, paths))


# --- the ingest Job works on the chart's volume layout, without `insitu init` ---------


def test_ingest_job_publishes_on_the_charts_volume_layout(tmp_path):
    """Run the rendered Job's command on folders laid out as its volumes are mounted."""
    import json
    import subprocess

    from insitu.datasets.synthetic import TrialSpec, generate_trial

    trial = generate_trial(
        tmp_path / "trial",
        TrialSpec(subjects_per_site=2, size=16, slices=2, sites=("site-a",)),
        show_progress=False,
    )
    objects = render(
        NODE_CHART,
        {**FULL_NODE, "ingest": {**FULL_NODE["ingest"], "source": {"existingClaim": "dicom"}}},
    )
    job = by_kind(objects, "Job")["insitu-ingest-r1"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    config = by_kind(objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    # One folder per volume, placed where the pod mounts it.
    names = ("state", "stores", "private", "fingerprints")
    volumes = {name: tmp_path / "volumes" / name for name in names}
    for folder in volumes.values():
        folder.mkdir(parents=True)
    home = tmp_path / "pod" / "var" / "lib" / "insitu"
    home.parent.mkdir(parents=True)
    home.symlink_to(volumes["state"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/lib/insitu"]["name"] == "state"
    (home / "insitu.toml").write_text(config)  # the ConfigMap's subPath file
    (home / "stores").symlink_to(volumes["stores"])
    (home / "private").symlink_to(volumes["private"])
    (volumes["private"] / "site.key").write_text("ab" * 32 + "\n")  # the Secret's item
    assert mounts["/var/lib/insitu/private/fingerprints"]["name"] == "fingerprints"
    (volumes["private"] / "fingerprints").symlink_to(volumes["fingerprints"])
    command = [
        str(trial.dicom_dir("site-a")) if word == "/source" else word
        for word in container["command"]
    ]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"INSITU_HOME": str(home), "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    command[0] = str(Path(sys.executable).parent / command[0])  # the image's PATH
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["dataset"] == "locat"
    # Published stores on the stores volume, the catalog and audit on the state volume.
    assert list(volumes["stores"].glob("locat/*.zarr"))
    assert (volumes["state"] / "catalog.sqlite").exists()
    assert list((volumes["state"] / "audit").iterdir())
    assert (volumes["private"] / "staging").is_dir()  # work in progress stays private
    # the pixel-provenance index on its own claim, where the airlock and SuperNode read it
    assert (volumes["fingerprints"] / "index.json").is_file()


@pytest.mark.parametrize("name", ["access", "gate", "airlock", "site"])
def test_service_starts_with_the_charts_environment_and_answers_its_probe(home, name):
    """The Deployment's command and environment start the service; its probe path answers.

    Bound to loopback here (the pod binds 0.0.0.0, JUPYTERHUB_SERVICE_URL's host).
    """
    import signal
    import subprocess
    import time

    import requests

    from insitu.hub.services import free_port

    deployment = by_kind(render(NODE_CHART, FULL_NODE), "Deployment")[f"insitu-{name}"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert (
        env["JUPYTERHUB_SERVICE_URL"] == f"http://0.0.0.0:{container['ports'][0]['containerPort']}"
    )
    port = free_port()
    env |= {
        "INSITU_HOME": str(home.root),
        "HOME": str(home.root),
        "PATH": os.environ["PATH"],
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_API_TOKEN": "not-checked-by-the-probe",
    }
    command = [sys.executable, *container["command"][1:]]
    probe = container["readinessProbe"]["httpGet"]["path"]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            try:
                answer = requests.get(f"http://127.0.0.1:{port}{probe}", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"{name} did not answer {probe}"
                time.sleep(0.2)  # polling interval
        assert answer.status_code == 200, answer.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
