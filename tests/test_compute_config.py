"""The dask-gateway configuration a node generates, and insitu.compute's refusals
(the running gateway is tested end to end in test_enclave_hub.py)."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from insitu.audit import AuditLog
from insitu.config import NodeHome
from insitu.errors import ConfigError, ServiceError
from insitu.hub.gateway import IDLE_TIMEOUT, NAME, configure_gateway, hub_service
from insitu.hub.services import HubService, ServiceContext, write_plan


@pytest.fixture
def planned(home: NodeHome) -> NodeHome:
    """A home whose service plan names the gate's URL (as `insitu up` writes it)."""
    gate = HubService(
        name="gate",
        port=1234,
        user_environment={"INSITU_GATE_URL": "http://127.0.0.1:1234/services/gate/"},
    )
    write_plan(home, [gate], {"port": 1})
    text = home.config_path.read_text()
    text = text.replace("max_workers = 4", "max_workers = 3")
    text = text.replace('worker_memory = "2 GiB"', 'worker_memory = "512 MiB"')
    home.config_path.write_text(text)
    return home


def test_the_gateway_config_carries_the_site_limits_and_hub_auth(planned: NodeHome):
    c = Config()
    configure_gateway(c, planned, (5001, 5002, 5003))
    assert c.DaskGateway.backend_class.endswith("UnsafeLocalBackend")
    assert c.DaskGateway.authenticator_class.endswith("JupyterHubAuthenticator")
    assert c.JupyterHubAuthenticator.jupyterhub_service_name == NAME
    assert c.Proxy.address == "127.0.0.1:5001" and c.Proxy.tcp_address == "127.0.0.1:5002"
    assert c.DaskGateway.address == "127.0.0.1:5003"
    assert c.ClusterConfig.scheduler_cmd[-1] == "scheduler"
    assert c.ClusterConfig.worker_cmd[-1] == "worker"
    assert c.ClusterConfig.cluster_max_workers == 3
    assert c.ClusterConfig.worker_memory == 512 * 2**20
    assert c.ClusterConfig.idle_timeout == IDLE_TIMEOUT


def test_workers_get_the_researchers_token_and_the_gate_not_a_service_token(planned: NodeHome):
    from dask_gateway_server.models import User

    c = Config()
    configure_gateway(c, planned, (5001, 5002, 5003))
    options = c.Backend.cluster_options
    user = User("ada")
    requested = options.parse_options({"gate_token": "ada-token"})
    env = options.get_configuration(requested, user)["environment"]
    assert env == {
        "INSITU_GATE_URL": "http://127.0.0.1:1234/services/gate/",
        "INSITU_USER": "ada",
        "JUPYTERHUB_API_TOKEN": "ada-token",
    }
    # No token, no gate access on the workers (never a fallback to another identity).
    bare = options.get_configuration(options.parse_options({}), user)["environment"]
    assert "JUPYTERHUB_API_TOKEN" not in bare
    # Every new cluster is audited under the researcher's name, never with the token.
    entries = AuditLog(planned).query(kind="compute")
    assert [e["user"] for e in entries] == ["ada", "ada"]
    assert entries[0]["details"]["action"] == "cluster.start"
    assert "ada-token" not in planned.audit.joinpath("audit.jsonl").read_text()


def test_a_bad_memory_size_names_the_key(planned: NodeHome):
    text = planned.config_path.read_text().replace('"512 MiB"', '"lots"')
    planned.config_path.write_text(text)
    with pytest.raises(ConfigError, match=r"compute\.worker_memory 'lots'"):
        configure_gateway(Config(), planned, (1, 2, 3))


def test_user_servers_get_gateway_addresses_not_paths(home: NodeHome):
    from insitu.config import load_config

    ctx = ServiceContext(home, load_config(home), "http://127.0.0.1:8765", "http://x/hub/api")
    service = hub_service(ctx)
    assert not service.managed  # started before the hub
    env = service.user_environment
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert env["DASK_GATEWAY__ADDRESS"].startswith("http://127.0.0.1:")
    assert env["DASK_GATEWAY__PROXY_ADDRESS"].startswith("gateway://127.0.0.1:")
    assert not any(str(home.root) in value for value in env.values())


def test_compute_outside_a_hub_server_says_where_it_works(monkeypatch):
    import insitu

    monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    with pytest.raises(ServiceError, match="no dask-gateway here"):
        insitu.compute(workers=2)
    with pytest.raises(ValueError, match="whole number"):
        insitu.compute(workers=0)
