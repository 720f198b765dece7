"""``insitu dataset retire``: the catalog's part (:mod:`insitu.datasets.retirement`),
then the access requests that have nothing left to read.

Access approvals are per dataset. While another version stays readable they stand
(they cover it; the retired one is refused at the gate). When the retired version
was the last readable one, every approval of the dataset is revoked and every
pending request denied, with the retirement as the reason (the register shows it).
Federated app approvals stay recorded; a run finds no readable version and is
refused (the site's data opens through :meth:`Catalog.readable` too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.datasets import retirement
from insitu.hub.access import DECIDERS, close_for_dataset

__all__ = ["retire"]


def retire(
    home: NodeHome,
    *,
    actor: str,
    dataset: str,
    version: str,
    reason: str,
    delete_data: bool = False,
    archive: Path | None = None,
    only_copy: bool = False,
    check_role: bool = True,
) -> dict[str, Any]:
    """Retire a version as ``actor`` (a steward or admin unless ``check_role`` is False:
    the node operator), and close the dataset's requests when nothing is left to read."""
    from insitu.audit import AuditLog
    from insitu.errors import AccessDeniedError
    from insitu.hub.accounts import require_role

    if check_role:
        try:
            require_role(home, actor, *DECIDERS)
        except AccessDeniedError as exc:
            AuditLog(home).append(
                "dataset.retire", user=actor, dataset=dataset, version=version,
                decision="refused", reason=str(exc),
            )  # fmt: skip
            raise
    done = retirement.retire(
        home, actor=actor, dataset=dataset, version=version, reason=reason,
        delete_data=delete_data, archive=archive, only_copy=only_copy,
    )  # fmt: skip
    closed = []
    if done["newly_retired"] and not done["readable_versions"]:
        why = f"{dataset} {done['version']} was retired: {reason.strip()}"
        closed = close_for_dataset(home, dataset, actor, why)
    return done | {"closed_requests": sorted(r.id for r in closed)}
