"""helm/insitu-coordinator: a federation's Flower SuperLink, always with TLS."""

from __future__ import annotations

import pytest
import yaml
from helm_render import (
    COORDINATOR_CHART,
    FULL_NODE,
    KUBE_VERSION,
    NODE_CHART,
    by_kind,
    egress_allowed,
    merge,
    pod_specs,
    render,
    validate,
)

EXAMPLE = COORDINATOR_CHART / "examples" / "locat-federation.yaml"
BASE = {
    "federation": "locat",
    "tls": {"existingSecret": "flower-superlink-tls"},
    "networkPolicy": {"allowedCIDRs": ["198.51.100.0/28"]},
}


@pytest.fixture(scope="module")
def objects():
    return render(COORDINATOR_CHART, BASE)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(BASE, id="base"),
        pytest.param(yaml.safe_load(EXAMPLE.read_text()), id="example"),
        pytest.param(merge(BASE, {"service": {"type": "ClusterIP"}}), id="cluster-ip"),
        pytest.param(
            merge(BASE, {"persistence": {"existingClaim": "superlink-state"}}), id="claim"
        ),
    ],
)
def test_renders_and_validates(values):
    rendered = render(COORDINATOR_CHART, values)
    validate(rendered)
    assert "insitu-superlink" in by_kind(rendered, "Deployment")


def test_lint_finds_no_errors():
    import helm_python

    report = helm_python.lint(COORDINATOR_CHART, BASE, kube_version=f"v{KUBE_VERSION}.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_superlink_serves_tls_with_node_authentication(objects):
    pod = by_kind(objects, "Deployment")["insitu-superlink"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    # insitu's entry point around flower-superlink (per-researcher Control API tokens)
    assert command[:5] == [
        "python",
        "-m",
        "insitu.federation.superlink",
        "--insitu-home",
        "/var/lib/superlink/home",
    ]
    assert "--insecure" not in command
    for flag, path in [
        ("--ssl-certfile", "/etc/insitu/tls/tls.crt"),
        ("--ssl-keyfile", "/etc/insitu/tls/tls.key"),
        ("--ssl-ca-certfile", "/etc/insitu/tls/ca.crt"),
    ]:
        assert command[command.index(flag) + 1] == path
    assert "--enable-supernode-auth" in command
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "flower-superlink-tls"
    # The port the sites dial is the port the SuperLink serves.
    port = int(command[command.index("--port") + 1])
    service = by_kind(objects, "Service")["insitu-superlink"]
    assert service["spec"]["ports"][0]["port"] == port
    node_default = yaml.safe_load((NODE_CHART / "values.yaml").read_text())
    assert node_default["supernode"]["coordinator"]["port"] == port


def test_superlink_is_locked_down(objects):
    ((_owner, pod),) = pod_specs(objects)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = spec["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not by_kind(objects, "Secret")


def test_only_the_federation_reaches_the_superlink(objects):
    policy = by_kind(objects, "NetworkPolicy")["insitu-superlink"]["spec"]
    peers = [p["ipBlock"]["cidr"] for rule in policy["ingress"] for p in rule["from"]]
    assert peers == ["198.51.100.0/28"]
    labels = by_kind(objects, "Deployment")["insitu-superlink"]["spec"]["template"]["metadata"][
        "labels"
    ]
    pols = list(by_kind(objects, "NetworkPolicy").values())
    assert not egress_allowed(pols, labels, {"ip": "8.8.8.8"}, 443)
    service = by_kind(objects, "Service")["insitu-superlink"]["spec"]
    assert service["externalTrafficPolicy"] == "Local"


def test_node_and_coordinator_agree_on_the_tls_ca_key():
    """The coordinator's Secret holds ca.crt; the node mounts that key by default."""
    node = render(NODE_CHART, FULL_NODE)
    supernode = by_kind(node, "Deployment")["insitu-supernode"]["spec"]["template"]["spec"]
    tls = next(v for v in supernode["volumes"] if v["name"] == "flower-tls")
    assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"tls": {"existingSecret": ""}}, r"/tls/existingSecret"),
        ({"tls": None}, r"missing propert.*'tls'"),
        ({"federation": ""}, r"/federation"),
        ({"networkPolicy": {"allowedCIDRs": []}}, r"/networkPolicy/allowedCIDRs"),
        (
            {"networkPolicy": {"allowedCIDRs": ["everyone"]}},
            r"/networkPolicy/allowedCIDRs/0.*pattern",
        ),
        ({"superlink": {"port": "9092"}}, r"/superlink/port.*want integer"),
        ({"service": {"type": "Public"}}, r"/service/type.*ClusterIP.*LoadBalancer"),
    ],
    ids=[
        "tls-empty",
        "tls-missing",
        "federation",
        "cidrs-empty",
        "cidr-pattern",
        "port-type",
        "enum",
    ],
)
def test_schema_rejects_bad_values(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(COORDINATOR_CHART, merge(BASE, values))
