"""Finding S1: the embedded node as an isolation boundary, or not.

Default (no ``hub.user_accounts_dir``): the documented exposure is pinned so it
cannot change silently (docs/security-review.md S1, docs/security.md). User
servers run under ``SimpleLocalProcessSpawner`` (the hub's own account, folder
inside the node home), dask clusters under ``UnsafeLocalBackend``, a process
started the way the spawner starts one reads ``private/site.key`` although
``private/`` is 0700, and `insitu up` warns every time.

With ``hub.user_accounts_dir`` (root only): a real hub spawns ada's server as
``insitu-ada``; code in her kernel and on her dask worker gets PermissionError
on the node's files and other users' processes, and the gate still serves her.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fixtures_hub import start_hub
from traitlets.config import Config

from insitu.config import NodeHome, load_config
from insitu.errors import ConfigError
from insitu.hub.gateway import configure_gateway
from insitu.hub.hub_config import configure
from insitu.hub.isolation import (
    default_accounts_dir,
    local_mode_warning,
    needs_isolation,
    node_account,
)
from insitu.hub.local_users import ACCOUNT_PREFIX, accounts_dir, system_name
from insitu.hub.services import ServiceContext, plan_services, write_plan


def _configure(home) -> Config:
    ctx = ServiceContext(
        home=home, config=load_config(home), hub_url="http://127.0.0.1:1", hub_api_url="x"
    )
    write_plan(home, plan_services(ctx), {"port": 1, "hub_api_port": 2, "proxy_api_port": 3})
    c = Config()
    configure(c, home.root)
    return c


def test_the_warning_names_the_account_the_exposure_and_the_way_out():
    text = local_mode_warning()
    assert "not an isolation boundary" in text
    assert f"({node_account()})" in text
    for exposed in ("private/", "stores", "hub database", "audit"):
        assert exposed in text
    assert "Kubernetes chart" in text and "S1" in text
    assert "hub.user_accounts_dir" in text
    assert local_mode_warning("/var/lib/insitu/users") == ""  # researchers have accounts


def test_an_unnamed_uid_is_named_by_number():
    assert node_account(2**31 - 7) == f"uid {2**31 - 7}"


def test_the_accounts_shim_python_runs_jupyterlab(tmp_path):
    """The accounts' own small Python (when ours sits in a closed folder) finds what
    Jupyter keeps under sys.prefix: JupyterLab's server extension and its static files
    (without them every researcher's /lab was a 404)."""
    from insitu.hub.local_users import _shim_python

    python = _shim_python(tmp_path / "users")
    assert python is not None, "needs the system's python3 of our minor version"
    probe = (
        "import os, jupyterlab\n"
        "from jupyter_core.paths import jupyter_config_path, jupyter_path\n"
        "conf = [os.path.join(p, 'jupyter_server_config.d', 'jupyterlab.json') "
        "for p in jupyter_config_path()]\n"
        "static = [os.path.join(p, 'lab', 'static') for p in jupyter_path()]\n"
        "print(any(map(os.path.isfile, conf)), any(map(os.path.isdir, static)))\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    found = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert found == ["True", "True"]
    assert _shim_python(tmp_path / "users") == python  # again: kept as it is


def test_up_as_root_refuses_a_shared_home_and_init_moves_it_to_own_accounts(
    home, monkeypatch, capsys
):
    """A home made before per-user accounts were the default (``init_home`` alone, as the
    old `insitu init` did): `insitu up` as root starts nothing and says, in one line, the
    command that fixes it; that command gives researchers their own accounts, audited,
    once; afterwards `up` no longer refuses. Not as root: only the warning (no accounts)."""
    from insitu.audit import AuditLog
    from insitu.cli import main

    assert not needs_isolation(load_config(home), uid=1000)  # warned about, not refused
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert needs_isolation(load_config(home))
    assert main(["up"]) == ConfigError.exit_code
    said = capsys.readouterr().err.strip()
    assert len(said.splitlines()) == 1, said
    assert f"`insitu --home {home.root} init`" in said and "root" in said
    assert not list(home.run.iterdir()), "nothing was started or planned"

    assert main(["--home", str(home.root), "init"]) == 0
    out = capsys.readouterr().out
    accounts = load_config(home).hub.user_accounts_dir
    assert accounts == default_accounts_dir(home) and accounts in out
    assert not needs_isolation(load_config(home))
    assert main(["--home", str(home.root), "init"]) == 0  # again: nothing more to do
    moved = [e for e in AuditLog(home).entries() if e["details"].get("action") == "isolate"]
    assert [e["details"]["accounts_dir"] for e in moved] == [accounts]
    AuditLog(home).verify()  # the chain still holds


def test_user_servers_and_dask_clusters_run_as_the_node_account(hub_home):
    """Without hub.user_accounts_dir: the configuration S1 describes (the default)."""
    c = _configure(hub_home)
    assert c.JupyterHub.spawner_class == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    folder = c.SimpleLocalProcessSpawner.home_dir_template
    assert folder == str(hub_home.hub / "users" / "{username}")
    gateway = Config()
    configure_gateway(gateway, hub_home, (1, 2, 3))
    assert gateway.DaskGateway.backend_class.endswith(".UnsafeLocalBackend")
    assert gateway.UnsafeLocalBackend.clusters_directory.startswith(str(hub_home.root))


def test_a_process_started_like_a_user_server_reads_the_site_key(hub_home):
    """File modes do not help against the same user id: private/ is 0700, and still."""
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    assert hub_home.private.stat().st_mode & 0o077 == 0
    folder = hub_home.hub / "users" / "ada"
    spawner = SimpleLocalProcessSpawner(home_dir=str(folder))
    probe = (
        "import os, sys;"
        "print(os.geteuid());"
        "sys.stdout.write(open('../../../private/site.key').read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        preexec_fn=spawner.make_preexec_fn("ada"),
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    ).stdout
    uid, key = out.split("\n", 1)
    assert int(uid) == os.geteuid()
    assert key.strip() == hub_home.site_key_path.read_text().strip()


# --- with hub.user_accounts_dir: one Unix account per researcher (S1 closed) ----------

SPAWN_TIMEOUT = 300.0


def _can_make_accounts() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None


def _python_for_accounts(where: Path) -> str | None:
    """A Python the accounts can run, with this environment's packages.

    Ours may live under a 0700 folder (here: /root/.pyenv); then a small venv in
    /tmp from the system's Python of the same minor version, whose .pth adds our
    site-packages (what a site does with hub.user_python).
    """
    from insitu.hub.local_users import _reachable_by_others

    if _reachable_by_others(Path(sys.executable)):
        return sys.executable
    base = shutil.which(f"python3.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin")
    if base is None or not _reachable_by_others(Path(base)):
        return None
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


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory, _hub_template: Path) -> Iterator[Any]:
    """A real hub whose researchers run as insitu-<name>, folders outside the home."""
    if not _can_make_accounts():
        pytest.skip("per-user Unix accounts need root and useradd")
    from insitu.hub import access, lifecycle

    root = tmp_path_factory.mktemp("isolated") / "home"
    shutil.copytree(_hub_template, root, symlinks=True)
    home = NodeHome(root)
    # Outside pytest's 0700 tmp tree: the accounts must be able to reach their folders.
    users_dir = Path(tempfile.mkdtemp(prefix="insitu-users-", dir="/tmp"))
    venv = Path(tempfile.mkdtemp(prefix="insitu-python-", dir="/tmp"))
    python = _python_for_accounts(venv)
    if python is None:
        shutil.rmtree(users_dir)
        shutil.rmtree(venv)
        pytest.skip("no Python here that other accounts may run")
    config = load_config(home)
    hub = dataclasses.replace(
        config.hub,
        user_accounts_dir=str(users_dir),
        user_python="" if python == sys.executable else python,
    )
    home.config_path.write_text(dataclasses.replace(config, hub=hub).to_toml())
    existing = {p.pw_name for p in pwd.getpwall()}
    req = access.request(home, "ada", "trial-a", "isolation test", "s1", 30)
    access.approve(home, "sam", req.id, "test")
    try:
        yield SimpleNamespace(hub=start_hub(home), home=home, users_dir=users_dir)
    finally:
        try:
            lifecycle.down(home, actor="tests")
        finally:
            for account in {p.pw_name for p in pwd.getpwall()} - existing:
                if account.startswith(ACCOUNT_PREFIX):
                    subprocess.run(["userdel", account], check=False, capture_output=True)
            shutil.rmtree(users_dir, ignore_errors=True)
            shutil.rmtree(venv, ignore_errors=True)


def _server(hub: Any, user: str) -> str:
    hub.token(user)
    if "" not in hub.api("GET", f"/users/{user}")["servers"]:
        hub.api("POST", f"/users/{user}/server")
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while not hub.api("GET", f"/users/{user}")["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, f"{user}'s server did not start"
        time.sleep(0.5)  # polling the hub API for readiness
    return f"{hub.url}/user/{user}/"


PROBE = """
import json, os, pwd
found = {}
for name, path in PATHS.items():
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        found[name] = "read"
    except OSError as e:
        found[name] = type(e).__name__
for name, folder in DIRS.items():
    try:
        os.listdir(folder)
        found[name] = "listed"
    except OSError as e:
        found[name] = type(e).__name__
found["account"] = pwd.getpwuid(os.geteuid()).pw_name
found["cwd"] = os.getcwd()
print(json.dumps(found))
"""


GATE_READ = """
import json, os, urllib.request
url = os.environ["INSITU_GATE_URL"].rstrip("/") + "/stores/trial-a/v1/zarr.json"
ada = {"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}
with urllib.request.urlopen(urllib.request.Request(url, headers=ada)) as r:
    print("DATASET", json.load(r)["attributes"]["insitu"]["dataset"])
"""


def test_a_researchers_kernel_cannot_open_the_node_files(isolated):
    from kernel_driver import Kernel

    from insitu.hub import researcher_tokens
    from insitu.hub.lifecycle import read_state

    home = isolated.home
    store = home.stores / "trial-a" / "v1.zarr"
    hub_pid = read_state(home).pid
    # The site keeps each researcher's coordinator token; ada's server gets only hers.
    tokens = {name: f"insitu-{name}-coordinator-token-0123456789" for name in ("ada", "sam")}
    for name, token in tokens.items():
        researcher_tokens.store(home, name, token)
    paths = {
        "site key": home.site_key_path,
        "store": store / "zarr.json",
        "catalog": home.catalog_path,
        "hub database": home.hub / "jupyterhub.sqlite",
        "accounts": home.hub / "accounts.sqlite",
        "cookie secret": home.hub / "jupyterhub_cookie_secret",
        "operator token": home.hub / "operator.token",
        "hub environment (tokens)": f"/proc/{hub_pid}/environ",
        "sam's coordinator token": researcher_tokens.token_path(home, "sam"),
    }
    for path in paths.values():
        assert Path(path).exists(), path  # the probe must not pass on a typo
    dirs = {"node home": home.root, "other users' folders": isolated.users_dir}
    code = f"PATHS = { ({k: str(v) for k, v in paths.items()})!r}\n"
    code += f"DIRS = { ({k: str(v) for k, v in dirs.items()})!r}\n" + PROBE
    kernel = Kernel(_server(isolated.hub, "ada"), isolated.hub.token("ada"))
    try:
        found = json.loads(kernel.run(code).strip().splitlines()[-1])
        assert found.pop("account") == system_name("ada")
        assert found.pop("cwd") == str(isolated.users_dir / "ada")
        assert found == dict.fromkeys([*paths, *dirs], "PermissionError")
        own = kernel.run("import os; print(os.environ['INSITU_COORDINATOR_TOKEN'])")
        assert own.strip() == tokens["ada"]
        # ... and reads through the gate still work, as ada and audited.
        out = kernel.run(GATE_READ)
        assert "DATASET trial-a" in out
    finally:
        kernel.close()
    assert home.root.stat().st_mode & 0o077 == 0
    folder = isolated.users_dir / "ada"
    assert folder.stat().st_uid == pwd.getpwnam(system_name("ada")).pw_uid
    assert folder.stat().st_mode & 0o077 == 0


def test_account_names_are_valid_and_distinct():
    assert system_name("ada") == "insitu-ada"
    odd = [system_name(n) for n in ("Ada", "ada.b", "ada_b", "x" * 60, "x" * 61)]
    assert len(set(odd)) == len(odd)
    assert all(len(n) <= 32 and re.fullmatch(r"[a-z0-9_-]+", n) for n in odd)


def test_the_accounts_folder_must_be_outside_the_home(hub_home):
    with pytest.raises(ConfigError, match="outside the node home"):
        accounts_dir(hub_home, str(hub_home.hub / "users"))
    with pytest.raises(ConfigError, match="absolute"):
        accounts_dir(hub_home, "users")


WORKER_PROBE = """
import insitu

def probe(path=SITE_KEY):
    import os, pwd
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        found = "read"
    except OSError as e:
        found = type(e).__name__
    return pwd.getpwuid(os.geteuid()).pw_name, found

client = insitu.compute(workers=1)
try:
    print("WORKERS", sorted(set(client.run(probe).values())))
finally:
    client.close()
    client.cluster.shutdown()
"""


def test_dask_workers_run_as_the_researchers_account(isolated):
    from kernel_driver import Kernel

    kernel = Kernel(_server(isolated.hub, "ada"), isolated.hub.token("ada"))
    try:
        code = f"SITE_KEY = {str(isolated.home.site_key_path)!r}\n" + WORKER_PROBE
        out = kernel.run(code, timeout=400)
    finally:
        kernel.close()
    assert f"WORKERS [('{system_name('ada')}', 'PermissionError')]" in out, out


def test_up_refuses_a_bad_accounts_setting_before_starting_anything(hub_home):
    from insitu.hub import lifecycle

    config = load_config(hub_home)
    inside = dataclasses.replace(config.hub, user_accounts_dir=str(hub_home.hub / "users"))
    hub_home.config_path.write_text(dataclasses.replace(config, hub=inside).to_toml())
    with pytest.raises(ConfigError, match="outside the node home"):
        lifecycle.up(hub_home, port=0, actor="tests")
    assert lifecycle.read_state(hub_home) is None
