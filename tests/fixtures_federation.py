"""Federation fixtures: a small synthetic trial ingested at three site homes, and a
real Flower federation on loopback (SuperLink + three SuperNodes with the site
executor), started once per module and always stopped, process groups and all."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from insitu.config import NodeHome, init_home, load_config

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"
# alice (home site-a) is approved for the dataset at every site; mallory (home site-b)
# at site-b only.
RESEARCHER = "alice"
STEWARD = "sam"


@dataclass
class SiteHomes:
    trial: Any
    homes: dict[str, NodeHome]


@dataclass
class Federation:
    address: str
    coordinator: NodeHome
    homes: dict[str, NodeHome]
    trial: Any
    started: list[NodeHome] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def researcher(self, name: str = RESEARCHER, home: str = "site-a") -> dict[str, Any]:
        """``identity`` and ``token`` of a researcher (keyword arguments of analyze & co.)."""
        from insitu.federation.identity import signer

        return {"identity": signer(self.homes[home], name), "token": self.tokens[name]}

    def restart_site(self, site: str) -> None:
        from insitu.federation import processes

        processes.start_site(self.homes[site], self.address, DATASET, insecure=True)


def set_policy(home: NodeHome, **values: Any) -> None:
    """Change [policy] of a site (the site runner reads it for every task)."""
    config = load_config(home)
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **values))
    home.config_path.write_text(config.to_toml())


def set_federation(home: NodeHome, **values: Any) -> None:
    """Change [federation] of a site (read for every task, like [policy])."""
    config = load_config(home)
    section = dict(config.extra.get("federation", {})) | values
    config = dataclasses.replace(config, extra=config.extra | {"federation": section})
    home.config_path.write_text(config.to_toml())


def _leftover_processes(pgids: set[int]) -> list[int]:
    """Groups with a process still running; a zombie that its parent (or init, for an
    orphan) has yet to reap runs nothing and is not left behind."""
    from insitu.supervisor import group_running

    return [pgid for pgid in pgids if group_running(pgid)]


def python_for_accounts(where: Path) -> str:
    """A Python the sandbox account can run, with this environment's packages.

    Ours may live under a 0700 folder (here: /root/.pyenv); then a small venv in
    /tmp from the system's Python of the same minor version, whose .pth adds our
    site-packages (what a site does with hub.user_python).
    """
    import shutil
    import subprocess
    import sys
    import sysconfig

    from insitu.hub.local_users import _reachable_by_others

    if os.geteuid() != 0 or _reachable_by_others(Path(sys.executable)):
        return ""
    base = shutil.which(f"python3.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    assert base is not None and _reachable_by_others(Path(base)), "no Python for accounts"
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    minor = f"python3.{sys.version_info.minor}"
    ours = sysconfig.get_paths()["purelib"]
    (where / "lib" / minor / "site-packages" / "insitu-tests.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    for path in [where, *where.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.name.startswith("python") else 0o644)
    return str(where / "bin" / "python")


@pytest.fixture(scope="session")
def federation_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteHomes]:
    """A LOCAT-like trial (12 subjects per site, tiny images) ingested at three homes."""
    import shutil
    import tempfile

    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import TrialSpec, generate_trial
    from insitu.datasets.tables_ingest import ingest_table

    root = tmp_path_factory.mktemp("federation-sites")
    # The sandbox account must run Python: outside pytest's 0700 tmp tree.
    venv = Path(tempfile.mkdtemp(prefix="insitu-python-", dir="/tmp"))
    python = python_for_accounts(venv)
    trial = generate_trial(
        root / "trial", TrialSpec(subjects_per_site=12, size=32, slices=8), show_progress=False
    )
    homes = {}
    for site in SITES:
        home = NodeHome(root / site)
        init_home(home, site)
        config = load_config(home)
        hub = dataclasses.replace(config.hub, user_python=python)
        home.config_path.write_text(dataclasses.replace(config, hub=hub).to_toml())
        report = ingest([trial.dicom_dir(site)], DATASET, home=home, show_progress=False)
        assert report.status == "published", report.counts()
        # The site's measurement table (arm, appendix diameter, ...) as a new version.
        ingest_table(
            DATASET,
            trial.table_path(site),
            subject_column="subject_id",
            date_columns=("scan_date",),
            home=home,
        )
        homes[site] = home
    _onboard(homes)
    try:
        yield SiteHomes(trial=trial, homes=homes)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def approve_researcher(home: NodeHome, account: str, dataset: str = DATASET) -> None:
    """``account`` asks for ``dataset`` and the site's steward approves (hub access rules)."""
    from insitu.hub import access
    from insitu.hub.accounts import AccountStore

    with AccountStore(home) as accounts:
        for name, role in ((account, "researcher"), (STEWARD, "steward")):
            if accounts.get(name) is None:
                accounts.add(name, role, None, actor="test")
    found = access.request(home, account, dataset, "federated tests", "trial", 30)
    access.approve(home, STEWARD, found.id, "ok")


def _onboard(homes: dict[str, NodeHome]) -> None:
    """Every site trusts every other's researcher identities; researchers approved."""
    from insitu.federation.trust import add_visitor, trust_home
    from insitu.hub.run_identity import identity_public_key

    keys = {site: identity_public_key(home) for site, home in homes.items()}
    for site, home in homes.items():
        for other, key in keys.items():
            if other != site:
                trust_home(home, other, key)
        researcher = (
            RESEARCHER
            if site == "site-a"
            else add_visitor(home, RESEARCHER, "site-a", actor="test")
        )
        approve_researcher(home, researcher)
    approve_researcher(homes["site-b"], "mallory")


@pytest.fixture(scope="module")
def federation(
    federation_sites: SiteHomes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    """Coordinator + three joined sites on loopback; stopped (process groups) afterwards."""
    from insitu.federation import processes

    coordinator = NodeHome(tmp_path_factory.mktemp("coordinator"))
    init_home(coordinator, "coordinator")
    address = f"127.0.0.1:{processes.free_port()}"
    from insitu.federation.control_auth import issue_token

    fed = Federation(address, coordinator, federation_sites.homes, federation_sites.trial)
    fed.tokens = {name: issue_token(coordinator, name) for name in (RESEARCHER, "mallory")}
    pgids: set[int] = set()
    try:
        pgids.add(processes.start_coordinator(coordinator, address, insecure=True).pgid)
        # The three SuperNodes start side by side: each waits for its own registration.
        with ThreadPoolExecutor(len(SITES)) as pool:
            started = pool.map(
                lambda site: processes.start_site(fed.homes[site], address, DATASET, insecure=True),
                SITES,
            )
            pgids.update(record.pgid for record in started)
        yield fed
    finally:
        for home in [*fed.homes.values(), coordinator]:
            for role in ("site", "coordinator"):
                record = processes.running(home, role)
                if record is not None:
                    pgids.add(record.pgid)
        with ThreadPoolExecutor(len(SITES)) as pool:
            list(pool.map(processes.stop, fed.homes.values()))
        processes.stop(coordinator)
        leftover = _leftover_processes(pgids)
        assert not leftover, f"process groups left behind: {leftover}"


def read_audit(home: NodeHome, kind: str | None = None) -> list[dict[str, Any]]:
    from insitu.audit import AuditLog

    return AuditLog(home).query(kind=kind)


def home_path(home: NodeHome) -> Path:
    return home.root
