"""Across machines the real way: TLS with a CA, and SuperNode authentication (the
coordinator accepts only SuperNodes whose public keys were registered)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home
from insitu.federation import processes, tls

pytestmark = pytest.mark.slow


def test_site_joins_over_tls_with_a_registered_key(tmp_path):
    coordinator, site = NodeHome(tmp_path / "coord"), NodeHome(tmp_path / "site")
    init_home(coordinator, "coordinator")
    init_home(site, "site-a")
    ca, cert, key = tls.make_test_certificates(tmp_path / "certs", ["127.0.0.1", "localhost"])
    address = f"127.0.0.1:{processes.free_port()}"
    try:
        processes.start_coordinator(
            coordinator,
            address,
            tls=processes.TlsOptions(str(cert), str(key), str(ca)),
            node_auth=True,
        )
        private, public = tls.write_supernode_keys(site)
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert private.is_relative_to(site.private)
        flwr_home = tmp_path / "flwr"
        processes.write_flower_connection(
            flwr_home, "fed", address, insecure=False, root_certificates=str(ca)
        )
        registered = subprocess.run(
            [
                str(Path(sys.executable).parent / "flwr"),
                "supernode",
                "register",
                str(public),
                "fed",
            ],
            env=dict(os.environ, FLWR_HOME=str(flwr_home)),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        record = processes.start_site(
            site, address, "locat", root_certificates=str(ca), auth_private_key=str(private)
        )
        assert not record.insecure
        assert "SuperNode ID" in Path(record.log).read_text()
    finally:
        processes.stop(site)
        processes.stop(coordinator)
    assert processes.running(site, "site") is None
    assert processes.running(coordinator, "coordinator") is None
