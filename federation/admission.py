"""Who may run at this site: the researcher check every task passes before any data.

The site runner calls :func:`identify` and :func:`authorize` for every
ClientApp task, after the app's fingerprint check and before the app is
installed or any data is opened:

1. the run's identity token (run config ``insitu-identity``) must verify
   (:func:`insitu.federation.identity.verify`: signed by a trusted home site,
   for this FAB and run config, not expired, not replayed);
2. the researcher must be approved for the node's dataset *at this site*
   (:func:`insitu.hub.access.check_read` on their local account, the same
   rule the data gate applies to notebook reads).

A refusal raises :class:`~insitu.errors.AccessDeniedError` (or its
:class:`~insitu.errors.AuthenticationError`), with a message safe to send to
the coordinator; the caller audits it. Sites that set ``[federation]
require_identity = false`` (a single-site test bed) admit runs without a
token as the researcher ``anonymous``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from insitu.config import NodeHome, SiteConfig
from insitu.errors import AccessDeniedError
from insitu.federation.identity import Researcher, local_account, verify
from insitu.hub.run_identity import IDENTITY_KEY

__all__ = ["ANONYMOUS", "authorize", "claimed_researcher", "identify"]

ANONYMOUS = Researcher(name="anonymous", home="")


def _token(run_config: Mapping[str, Any]) -> str:
    value = run_config.get(IDENTITY_KEY, "")
    return value if isinstance(value, str) else ""


def claimed_researcher(run_config: Mapping[str, Any]) -> str:
    """Who the run claims to be (for audit entries of refusals: unverified)."""
    from insitu.federation.identity import claimed

    token = _token(run_config)
    return claimed(token) if token else "unknown (no identity)"


def identify(
    home: NodeHome,
    config: SiteConfig,
    *,
    fab_content: bytes,
    override_config: Mapping[str, Any],
    run_id: int | str,
) -> Researcher:
    """The researcher the run's signed identity proves, or AuthenticationError."""
    from insitu.federation.settings import federation_settings

    token = _token(override_config)
    if not token and not federation_settings(config).require_identity:
        return ANONYMOUS
    return verify(
        home,
        token,
        fab_hash=hashlib.sha256(fab_content).hexdigest(),
        run_config=override_config,
        run_id=str(run_id),
    )


def authorize(home: NodeHome, config: SiteConfig, researcher: Researcher, dataset: str) -> None:
    """AccessDeniedError unless ``researcher`` is approved for ``dataset`` at this site."""
    from insitu.hub.access import check_read

    if researcher is ANONYMOUS:
        return  # only where [federation] require_identity = false
    try:
        check_read(home, local_account(researcher, config.site.name), dataset)
    except AccessDeniedError as refused:
        raise AccessDeniedError(
            f"researcher {researcher.qualified} is not approved for dataset {dataset!r} at "
            f"this site ({refused})"
        ) from None
