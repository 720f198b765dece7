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

Unless ``hub.user_accounts_dir`` is set (as root: one Unix account per
researcher, :mod:`insitu.hub.local_users`), `insitu up` says so every time it
starts a node; the Kubernetes chart is the other isolation boundary (non-root
pods, no store mounts, egress closed).
"""

from __future__ import annotations

import os
import pwd

__all__ = ["local_mode_warning", "node_account"]


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
