"""What the embedded node does not isolate (security review, finding S1).

With `insitu up` (no Kubernetes) every user server runs under JupyterHub's
``SimpleLocalProcessSpawner`` and every dask-gateway cluster under
``UnsafeLocalBackend``: both run as the node's own operating-system account,
with working folders inside the node home (``hub/users/<name>``,
``run/dask-clusters``). A researcher's code can therefore open ``private/``
(site key, pseudonym links), the stores, ``catalog.sqlite``, the hub and access
databases and the audit log directly, bypassing the gate and its audit, read
other users' tokens from ``/proc``, and run the CLI as anyone. File modes do
not help against the same user id.

As root, `insitu init` and `insitu demo` set ``hub.user_accounts_dir``
(:func:`isolate`: one Unix account per researcher, :mod:`insitu.hub.local_users`),
on a new home or one made before that default (`insitu init` again migrates it);
`insitu up` as root refuses to start such a home (:func:`shared_home_refusal`);
otherwise `insitu up` and `insitu demo` say so every time they start a node; the
Kubernetes chart is the other isolation boundary (non-root pods, no store
mounts, egress closed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
from pathlib import Path
from typing import Any

__all__ = [
    "default_accounts_dir",
    "isolate",
    "local_mode_warning",
    "needs_isolation",
    "node_account",
    "shared_home_refusal",
]


def node_account(uid: int | None = None) -> str:
    """The name of the account the hub and user servers run as (its uid when unnamed)."""
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def local_mode_warning(user_accounts_dir: str = "", uid: int | None = None) -> str:
    """What `insitu up` prints on stderr: empty when researchers have their own accounts,
    else that local mode is not an isolation boundary."""
    if user_accounts_dir:
        return ""
    account = node_account(uid)
    return (
        "warning: local mode is not an isolation boundary. User servers and dask workers "
        f"run as this node's own account ({account}), with their folders inside the node "
        "home: a researcher's code can read private/ (site key, pseudonym links), the "
        "stores, the catalog, the hub database and the audit log directly, bypassing the "
        "gate and its audit. Use `insitu up` only for demos, tests and one trusted team; "
        "as root, set hub.user_accounts_dir in insitu.toml to run each researcher as their "
        "own Unix account, or use the Kubernetes chart (docs/security.md, finding S1)."
    )


ACCOUNTS_ROOT = Path("/var/lib/insitu/accounts")


def default_accounts_dir(home: Any) -> str:
    """Where a node run as root keeps its researchers' folders unless insitu.toml says:
    ``/var/lib/insitu/accounts/<site folder>-<hash of the home path>`` (outside every
    home, reachable by the accounts, one per node home on a machine)."""
    root = Path(home.root).resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return str(ACCOUNTS_ROOT / f"{root.name}-{digest}")


def needs_isolation(config: Any, uid: int | None = None) -> bool:
    """True for a node run as root whose researchers would share the node's account (a
    home made before per-user accounts were the default, or by ``init_home`` alone)."""
    uid = os.geteuid() if uid is None else uid
    return uid == 0 and config.hub.spawner == "local" and not config.hub.user_accounts_dir


def shared_home_refusal(home: Any) -> str:
    """The one line `insitu up` (as root) answers on such a home, with the command that
    moves it to per-user accounts."""
    return (
        f"{home.root} predates per-user accounts: as root, researchers' servers would run as "
        f"root and could read private/; run `insitu --home {home.root} init` once (it gives "
        "each researcher their own Unix account, audited), then `insitu up` again"
    )


def isolate(home: Any) -> str:
    """As root, give the node home per-user accounts (``hub.user_accounts_dir``) unless
    insitu.toml already names a folder or another spawner; returns the folder, or "".
    Idempotent: `insitu init` calls it on new and existing homes."""
    from insitu.config import load_config

    config = load_config(home)
    if not needs_isolation(config):
        return config.hub.user_accounts_dir
    hub = dataclasses.replace(config.hub, user_accounts_dir=default_accounts_dir(home))
    home.config_path.write_text(dataclasses.replace(config, hub=hub).to_toml())
    return hub.user_accounts_dir
