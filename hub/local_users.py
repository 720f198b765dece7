"""Per-user Unix accounts for the embedded node (closes finding S1 when enabled).

With ``hub.user_accounts_dir`` set in insitu.toml and the hub running as root,
each researcher's server runs as their own unprivileged system account
``insitu-<name>`` (created on first spawn: no login shell, no password), in a
folder ``<user_accounts_dir>/<name>`` owned by that account with mode 0700,
outside the node home. `insitu up` makes the node home itself 0700 (root), so
the account reaches the stores, ``private/``, the catalog, the databases and
the audit log only through the gate, the access API and the airlock over
loopback HTTP, as in the Kubernetes chart. Other users' servers run under other
uids, so their folders, processes and ``/proc/<pid>/environ`` (tokens) are
closed too.

JupyterHub's ``LocalProcessSpawner`` switches to the account whose name is the
hub user's name (``pwd.getpwnam(user.name)``); this subclass maps the hub name
to the system name instead, and dask-gateway's ``LocalBackend`` is mapped the
same way (:class:`AccountsLocalBackend`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from insitu.errors import ConfigError, ServiceError

__all__ = [
    "ACCOUNT_PREFIX",
    "AccountsLocalBackend",
    "AccountsSpawner",
    "ensure_account",
    "prepare_folder",
    "system_name",
]

ACCOUNT_PREFIX = "insitu-"
_MAX_NAME = 32  # useradd's limit on Linux
NOLOGIN = "/usr/sbin/nologin"
SHIM_NAME = ".python"  # the accounts' Python, when the hub's is closed to them


def system_name(hub_name: str) -> str:
    """The system account of a hub user: ``insitu-<name>``, valid for useradd.

    Characters useradd refuses become ``_``; a name that had to change or is too
    long gets a short hash so two hub users never share an account.
    """
    lowered = hub_name.lower()
    safe = re.sub(r"[^a-z0-9_-]", "_", lowered)
    name = ACCOUNT_PREFIX + safe
    if safe != hub_name or len(name) > _MAX_NAME:
        digest = hashlib.sha256(hub_name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}-{digest}"
    return name


def ensure_account(hub_name: str) -> pwd.struct_passwd:
    """The hub user's system account, created (system, no home, no login) when missing."""
    name = system_name(hub_name)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise ConfigError(
            f"hub.user_accounts_dir is set but the hub does not run as root: it cannot create "
            f"the account {name} for {hub_name!r}. Run `insitu up` as root, or unset it."
        )
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = NOLOGIN if Path(NOLOGIN).exists() else "/bin/false"
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", shell, "--user-group", "--comment", f"insitu user {hub_name}", name],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode not in (0, 9):  # 9: created meanwhile by a concurrent spawn
        raise ServiceError(f"useradd {name} failed: {done.stderr.strip()}")
    return pwd.getpwnam(name)


def prepare_folder(root: Path, hub_name: str, account: pwd.struct_passwd) -> Path:
    """``root/<name>``, owned by the account, 0700; ``root`` itself 0711 (root-owned).

    Only the folder itself is chowned, never what is inside: the account may have
    swapped a subfolder for a symlink, and root must not follow it.
    """
    if not hub_name or "/" in hub_name or "\0" in hub_name or hub_name.startswith("."):
        raise ServiceError(f"the user name {hub_name!r} cannot name a folder")
    root.mkdir(parents=True, exist_ok=True)
    # Others may enter their own folder, never list or read the others.
    root.chmod(0o711)
    folder = root / hub_name
    folder.mkdir(exist_ok=True)
    os.chown(folder, account.pw_uid, account.pw_gid, follow_symlinks=False)
    folder.chmod(0o700)
    return folder


def _preexec(account: pwd.struct_passwd, folder: str, *, examples: bool = False) -> Any:
    """Drop to the account (gid, groups, uid) and start in its folder, after fork; with
    ``examples``, copy the example notebooks there (a researcher's edits are kept)."""
    uid, gid = account.pw_uid, account.pw_gid
    from insitu.kernels.examples import (
        copy_examples,  # imported before the fork, never in the child
    )

    def preexec() -> None:
        os.setgid(gid)
        os.setgroups([gid])
        os.setuid(uid)
        os.chdir(folder)
        if examples:
            # As the account, so root never writes through a link the account planted.
            with contextlib.suppress(OSError):
                copy_examples(folder)

    return preexec


def _spawner_base() -> type:
    from jupyterhub.spawner import LocalProcessSpawner

    base: type = LocalProcessSpawner  # jupyterhub is untyped
    return base


class AccountsSpawner(_spawner_base()):  # type: ignore[misc]
    """``LocalProcessSpawner`` running each hub user as ``insitu-<name>``."""

    from traitlets import Unicode as _Unicode

    users_dir = _Unicode(
        "", config=True, help="Folder of the users' folders (outside the node home)."
    )
    del _Unicode

    def _folder(self) -> str:
        if not self.users_dir:
            raise ConfigError("AccountsSpawner.users_dir is not set (hub.user_accounts_dir)")
        return str(Path(self.users_dir) / self.user.name)

    def make_preexec_fn(self, name: str) -> Any:
        account = ensure_account(name)
        prepare_folder(Path(self.users_dir), name, account)
        return _preexec(account, self._folder(), examples=True)

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        env["USER"] = system_name(self.user.name)
        env["HOME"] = self._folder()
        env["SHELL"] = "/bin/sh"
        return env

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        return paths  # internal_ssl is not used by insitu


def _backend_base() -> type:
    from dask_gateway_server.backends.local import LocalBackend

    base: type = LocalBackend  # dask-gateway-server is untyped
    return base


class AccountsLocalBackend(_backend_base()):  # type: ignore[misc]
    """dask-gateway's ``LocalBackend`` running a user's clusters as ``insitu-<name>``."""

    def set_file_permissions(self, paths: list[str], username: str) -> None:
        # Upstream (2026.3) appends the TLS file paths with ``list.extend(str)``, i.e. as
        # single characters, "/" among them: chown the working directory's tree only,
        # just created by root; deepest first, the folder itself (0700) last.
        account = ensure_account(username)
        workdir = Path(paths[0])
        workdir.chmod(0o700)
        for path in [*sorted(workdir.rglob("*"), reverse=True), workdir]:
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)

    def make_preexec_fn(self, cluster: Any) -> Any:  # pragma: no cover (after fork)
        return _preexec(ensure_account(cluster.username), cluster.state["workdir"])


def accounts_dir(home: Any, configured: str) -> Path:
    """``hub.user_accounts_dir`` checked: absolute, outside the node home, hub as root."""
    path = Path(configured)
    if not path.is_absolute():
        raise ConfigError(
            f"hub.user_accounts_dir {configured!r} must be an absolute path, e.g. "
            "/var/lib/insitu/users"
        )
    root = Path(home.root).resolve()
    resolved = path.resolve()
    if resolved == root or root in resolved.parents or resolved in root.parents:
        raise ConfigError(
            f"hub.user_accounts_dir {configured!r} must be outside the node home {root} "
            "(and not contain it): user accounts must not reach the node's files"
        )
    if os.geteuid() != 0:
        raise ConfigError(
            "hub.user_accounts_dir is set, so each researcher runs as their own Unix account: "
            "that needs `insitu up` as root. Run it as root, or unset hub.user_accounts_dir."
        )
    return resolved


def protect_home(home: Any) -> None:
    """Close the node home to every other account (root only, 0700)."""
    Path(home.root).chmod(0o700)


def clusters_dir(users_dir: Path) -> Path:
    """dask-gateway's working folders: each cluster's is chowned to its user, 0700."""
    path = users_dir / ".dask-clusters"
    path.mkdir(parents=True, exist_ok=True)
    users_dir.chmod(0o711)
    path.chmod(0o711)
    return path


def _reachable_by_others(path: Path) -> bool:
    """Whether any account may run ``path``: every folder above it searchable by others."""
    real = path.resolve()
    if not real.is_file() or not real.stat().st_mode & 0o001:
        return False
    return all(parent.stat().st_mode & 0o001 for parent in real.parents)


def _shim_python(users_dir: Path) -> str | None:
    """A Python the accounts can run, with this environment's packages: a small venv
    from the system's Python of the same minor version whose .pth adds our
    site-packages (ours may live under a 0700 folder such as /root/.pyenv).
    None when the system has no such Python."""
    import sys
    import sysconfig

    minor = f"python3.{sys.version_info.minor}"
    base = shutil.which(minor, path="/usr/bin:/usr/local/bin")
    if base is None or not _reachable_by_others(Path(base)):
        return None
    where = users_dir / SHIM_NAME
    python = where / "bin" / "python"
    pth = where / "lib" / minor / "site-packages" / "insitu-site.pth"
    line = f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    if not (python.exists() and pth.exists() and pth.read_text() == line):
        users_dir.mkdir(parents=True, exist_ok=True)
        users_dir.chmod(0o711)
        subprocess.run(
            [base, "-m", "venv", "--without-pip", "--clear", str(where)],
            check=True,
            capture_output=True,
        )
        pth.write_text(line)
    # Jupyter looks for its config (server extensions: JupyterLab itself) and data (the
    # lab's static files, widget extensions) under sys.prefix: the shim's are ours.
    for sub in ("etc", "share"):
        link, target = where / sub / "jupyter", Path(sys.prefix) / sub / "jupyter"
        if target.is_dir() and not link.is_symlink():
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(target)
    for folder, dirs, files in os.walk(where):  # not into the links: ours stay as they are
        Path(folder).chmod(0o755)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(0o755 if name.startswith("python") else 0o644)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
    return str(python)


def user_python(configured: str, users_dir: Path | None = None) -> str:
    """The Python the researchers' accounts run: ``hub.user_python``, else this one, else
    (this one is closed to other accounts) a small venv in ``users_dir`` built from the
    system's Python with this environment's packages."""
    import sys

    python = configured or sys.executable
    if not _reachable_by_others(Path(python)):
        shim = _shim_python(users_dir) if users_dir is not None and not configured else None
        if shim is not None:
            return shim
        raise ConfigError(
            f"the researchers' accounts cannot run {python} (it, or a folder above "
            f"{Path(python).resolve()}, is closed to other accounts): install insitu where "
            "every account can read it, or set hub.user_python in insitu.toml to such a Python "
            "with insitu's packages"
        )
    return python


def user_lab_settings(users_dir: Path) -> Path:
    """The enclave's JupyterLab settings where the accounts can read them."""
    from insitu.kernels.enclave import write_lab_settings

    folder = write_lab_settings(users_dir / ".jupyter" / "lab-settings")
    folder.chmod(0o755)
    (folder / "overrides.json").chmod(0o644)
    return folder


def user_kernels(users_dir: Path, python: str) -> str:
    """A kernel spec for ``python`` the accounts find first (their JUPYTER_PATH)."""
    from insitu.kernels.kernelspec import write_kernelspec

    path = users_dir / ".jupyter"
    path.mkdir(parents=True, exist_ok=True)
    write_kernelspec(path, python=python)
    for folder in [users_dir, *(p for p in path.rglob("*") if p.is_dir()), path]:
        folder.chmod(0o711 if folder == users_dir else 0o755)
    for file in (p for p in path.rglob("*") if p.is_file()):
        file.chmod(0o644)
    return str(path)
