"""Across machines the real way: TLS with a CA, and SuperNode authentication, on by
default (the coordinator admits only SuperNodes whose public keys its admin registered);
an unknown SuperNode is refused."""

from __future__ import annotations

import stat

import pytest

from insitu.config import NodeHome, init_home
from insitu.errors import ServiceError
from insitu.federation import processes, tls
from insitu.federation.control_auth import register_node

pytestmark = pytest.mark.slow


def test_a_registered_site_joins_over_tls_and_an_unknown_one_is_refused(tmp_path):
    coordinator = NodeHome(tmp_path / "coord")
    site, stranger = NodeHome(tmp_path / "site"), NodeHome(tmp_path / "stranger")
    init_home(coordinator, "coordinator")
    init_home(site, "site-a")
    init_home(stranger, "site-x")
    ca, cert, key = tls.make_test_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    address = f"127.0.0.1:{processes.free_port()}"
    try:
        record = processes.start_coordinator(
            coordinator, address, tls=processes.TlsOptions(str(cert), str(key), str(ca))
        )
        assert record.extra["node_auth"] is True  # the default with TLS
        private, public = tls.write_supernode_keys(site)
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert private.is_relative_to(site.private)
        node_id = register_node(
            coordinator, address, str(public), insecure=False, root_certificates=str(ca)
        )
        assert node_id > 0
        record = processes.start_site(
            site, address, "locat", root_certificates=str(ca), auth_private_key=str(private)
        )
        assert not record.insecure
        # A SuperNode with a key the coordinator never registered does not get in.
        unknown, _ = tls.write_supernode_keys(stranger)
        with pytest.raises(ServiceError, match="Failed to activate SuperNode"):
            processes.start_site(
                stranger, address, "locat", root_certificates=str(ca), auth_private_key=str(unknown)
            )
    finally:
        for home in (site, stranger, coordinator):
            processes.stop(home)
    for home in (site, stranger):
        assert processes.running(home, "site") is None
    assert processes.running(coordinator, "coordinator") is None
