"""Each rendered container's command, run here, as far as a process can run outside a cluster.

No cluster runs on these machines, so the commands and arguments of the
node image's containers (and the commands dask-gateway's controller gives
researchers' schedulers and workers) are taken from the rendered chart and
started with this environment, which is the lock the images install, on
loopback: the pod's paths map to temporary folders, its fixed ports to free
ones. Each must parse its flags and start, or stop with the one clear line
it gives for what only a cluster has. (The services, their probes and the
ingest Job run in tests/test_helm_consistency.py.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helm_render import FULL_NODE, NODE_CHART, SMALL_SITE, by_kind, merge, render

from insitu.hub.services import free_port

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def site_objects() -> list[dict[str, Any]]:
    values = merge(
        yaml.safe_load(SMALL_SITE.read_text()),
        {
            "ingest": {
                "schedule": "",
                "source": {"existingClaim": "", "url": "dicomwebs:///"},
                "pacs": {
                    "url": "https://pacs.hospital-a.example/dicom-web",
                    "username": "insitu",
                    "existingSecret": "pacs-credentials",
                },
            }
        },
    )
    return render(NODE_CHART, values)


def _container(objects: list[dict[str, Any]], kind: str, name: str, init: bool = False) -> Any:
    obj = by_kind(objects, kind)[name]
    spec = obj["spec"]["template"]["spec"]
    return (spec["initContainers"] if init else spec["containers"])[0]


def _argv(container: dict[str, Any]) -> list[str]:
    """What the container runs: command (else the image's) plus args; the image's PATH here."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if argv and (BIN / argv[0]).exists():
        argv[0] = str(BIN / argv[0])
    return argv


def _expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """The kubelet's $(VAR) substitution in a container's command and args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]


class _Process:
    """A started command, its output kept; stopped with its whole group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


@pytest.fixture
def processes() -> Iterator[list[_Process]]:
    started: list[_Process] = []
    yield started
    for process in started:
        process.stop()


def _wait_for(check: Any, process: _Process, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.proc.poll() is None, f"{what} exited:\n{process.output()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not start:\n{process.output()[-3000:]}"
        time.sleep(0.2)  # polling interval


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # the image's PATH has its venv first
    return {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8", **extra}


# --- dask-gateway: researchers' schedulers and workers --------------------------------


def _cluster_commands(objects: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The scheduler's and a worker's command as dask-gateway's controller builds them."""
    from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
    from dask_gateway_server.backends.kubernetes.controller import KubeController
    from test_helm_subcharts import gateway_config

    config = KubeClusterConfig(config=gateway_config(objects))
    controller = KubeController()
    scheduler = controller.get_scheduler_command("insitu", "c1", config)
    worker = controller.get_worker_command("insitu", "c1", config)
    return scheduler, worker


def test_dask_cluster_commands_start_a_cluster(site_objects, tmp_path, processes):
    """`dask scheduler` with dask-gateway's flags and preload, and a `dask worker` joining it."""
    from dask_gateway_server.tls import new_keypair
    from distributed import Client
    from distributed.security import Security

    scheduler, worker = _cluster_commands(site_objects)
    assert scheduler[:2] == ["dask", "scheduler"] and worker[:2] == ["dask", "worker"]
    cert, key = new_keypair("c1")
    (tmp_path / "dask.crt").write_bytes(cert)
    (tmp_path / "dask.pem").write_bytes(key)
    (tmp_path / "api-token").write_text("token-of-this-cluster")
    port, dashboard, api = free_port(), free_port(), free_port()
    loopback = {"8786": str(port), ":8787": f"127.0.0.1:{dashboard}", ":8788": f"127.0.0.1:{api}"}
    argv = [loopback.get(a, a) for a in scheduler]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    tls = {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(tmp_path / "dask.crt"),
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT": str(tmp_path / "dask.crt"),
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY": str(tmp_path / "dask.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(tmp_path / "dask.crt"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(tmp_path / "dask.pem"),
    }
    env = _env(
        tmp_path,
        DASK_GATEWAY_API_URL=f"http://127.0.0.1:{free_port()}/api",  # the gateway: not here
        DASK_GATEWAY_CLUSTER_NAME="insitu.c1",
        DASK_GATEWAY_API_TOKEN=str(tmp_path / "api-token"),
        **tls,
    )
    sched = _Process([str(BIN / "dask"), *argv[1:]], env, tmp_path / "scheduler.log")
    processes.append(sched)

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{api}/api/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    _wait_for(healthy, sched, "the scheduler")
    address = f"tls://127.0.0.1:{port}"
    worker_argv = [address if a.startswith("tls://") else a for a in worker]
    worker_argv[worker_argv.index("--dashboard-address") + 1] = f"127.0.0.1:{free_port()}"
    worker_argv[worker_argv.index("--local-directory") + 1] = str(tmp_path / "scratch")
    worker_env = env | {"DASK_GATEWAY_WORKER_NAME": "dask-worker-c1-x"}
    worker_argv = _expand(worker_argv, worker_env)
    work = _Process([str(BIN / "dask"), *worker_argv[1:]], worker_env, tmp_path / "worker.log")
    processes.append(work)
    security = Security(
        tls_ca_file=tls["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"],
        tls_client_cert=str(tmp_path / "dask.crt"),
        tls_client_key=str(tmp_path / "dask.pem"),
        require_encryption=True,
    )
    with Client(address, security=security, timeout=60) as client:
        client.wait_for_workers(1, timeout=120)
        (name,) = [w["name"] for w in client.scheduler_info()["workers"].values()]
        assert name == "dask-worker-c1-x"
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6


# --- insitu's dask-gateway controller -----------------------------------------------------


def test_dask_controller_parses_its_flags_and_needs_a_cluster(site_objects, tmp_path):
    container = _container(site_objects, "Deployment", "controller-dask-gateway")
    argv = _argv(container)
    assert argv[1:] == ["-m", "insitu.hub.dask_controller", "--config", argv[-1]]
    config = by_kind(site_objects, "ConfigMap")["controller-dask-gateway"]["data"]
    (tmp_path / "dask_gateway_config.py").write_text(config["dask_gateway_config.py"])
    argv[0], argv[-1] = sys.executable, str(tmp_path / "dask_gateway_config.py")
    env = _env(tmp_path, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    clear = [
        line
        for line in done.stderr.splitlines()
        if line.startswith("insitu dask controller: no Kubernetes cluster to control")
    ]
    assert len(clear) == 1, done.stderr[-3000:]


# --- the SuperNode ------------------------------------------------------------------------


def test_supernode_command_starts_and_its_probe_answers(site_objects, tmp_path, processes):
    from insitu.config import NodeHome, init_home
    from insitu.federation.tls import make_test_certificates, write_supernode_keys

    home = NodeHome(tmp_path / "home")
    init_home(home, "hospital-a")
    ca, _cert, _key = make_test_certificates(tmp_path / "tls", ["127.0.0.1"])
    private, _public = write_supernode_keys(home)
    container = _container(site_objects, "Deployment", "insitu-supernode")
    runtime = free_port()
    paths = {
        "/var/lib/insitu": str(home.root),
        "/etc/insitu/flower-tls/ca.crt": str(ca),
        "/etc/insitu/flower-auth/supernode.key": str(private),
        "fl.locat-consortium.example:9092": f"127.0.0.1:{free_port()}",  # nothing listens
        "9094": str(runtime),
    }

    def local(word: str) -> str:
        for pod, here in paths.items():
            word = here if word == pod else word.replace(f'"{pod}"', f'"{here}"')
        return word

    argv = [local(w) for w in _argv(container)]
    argv[0] = sys.executable
    env = _env(
        tmp_path,
        INSITU_HOME=str(home.root),
        FLWR_HOME=str(tmp_path / "flwr"),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_UPDATE_CHECK_ENABLED="0",
    )
    node = _Process(argv, env, tmp_path / "supernode.log")
    processes.append(node)
    probe = [
        local(w) if w != "python" else sys.executable
        for w in container["readinessProbe"]["exec"]["command"]
    ]
    probe = [w.replace("9094", str(runtime)) for w in probe]

    def ready() -> bool:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    _wait_for(ready, node, "the SuperNode's Runtime API")
    assert node.proc.poll() is None  # still trying the coordinator, as in a pod before it is up


# --- the ingest's PACS credential ---------------------------------------------------------


def test_pacs_credential_init_container_makes_a_file_insitu_accepts(site_objects, tmp_path):
    from insitu.config import NodeHome, init_home
    from insitu.datasets.pacs_config import load_pacs_settings

    job = next(iter(by_kind(site_objects, "Job").values()))
    (init,) = job["spec"]["template"]["spec"]["initContainers"]
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "credential").write_text("s3cret")
    (secret / "credential").chmod(0o440)  # as Kubernetes leaves it under fsGroup
    run = tmp_path / "run"
    run.mkdir()
    argv = [
        w.replace("/etc/insitu/pacs-secret", str(secret)).replace("/run/insitu/pacs", str(run))
        for w in _argv(init)
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    home = NodeHome(tmp_path / "home")
    init_home(home, "hospital-a")
    toml = by_kind(site_objects, "ConfigMap")["insitu-config"]["data"]["insitu.toml"]
    home.config_path.write_text(toml.replace("/run/insitu/pacs", str(run)))
    settings = load_pacs_settings(home)
    assert settings.password() == "s3cret"
    assert settings.url == "https://pacs.hospital-a.example/dicom-web"


def test_full_node_renders_every_command_from_the_node_image():
    """Every container running the node image is one of the commands tested here or in
    test_helm_consistency.py (services, ingest, SuperNode, controller, PACS init)."""
    objects = render(NODE_CHART, FULL_NODE)
    seen = set()
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job", "CronJob"):
            continue
        spec = obj["spec"].get("template", {}).get("spec") or {}
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            if container["image"].startswith("insitu/node"):
                seen.add(tuple(container["command"][:3]))
    assert seen == {
        ("python", "-m", "insitu.hub.access_service"),
        ("python", "-m", "insitu.hub.gate_service"),
        ("python", "-m", "insitu.hub.airlock_service"),
        ("python", "-m", "insitu.hub.site_service"),
        ("python", "-m", "insitu.federation.site_service"),
        ("python", "-m", "insitu.hub.dask_controller"),
        ("insitu", "ingest", "/source"),
    }
