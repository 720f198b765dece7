"""Onboarding between sites: which home sites this site trusts, and visiting researchers.

- :func:`trust_home` records another site's identity key (``insitu federation
  identity-key`` there) in this site's ``[federation.trusted_homes]``; from then
  on this site accepts runs whose researcher identity that site signed.
- :func:`add_visitor` creates the local account ``<name>.<home>`` of a
  researcher from another site (no password: they never log in here). Like
  any account, it reads nothing until a steward approves its access request
  for a dataset (:mod:`insitu.hub.access`); that approval is what lets their
  federated runs use the dataset at this site.
"""

from __future__ import annotations

import dataclasses
import re

from insitu.config import NodeHome, load_config
from insitu.errors import InvalidRequestError
from insitu.federation.identity import Researcher, local_account

__all__ = ["add_visitor", "trust_home"]

_KEY_HEX = re.compile(r"^[0-9a-f]{64}$")


def trust_home(home: NodeHome, site: str, public_key: str) -> None:
    """Accept researcher identities signed by ``site`` (its Ed25519 key, hex)."""
    from insitu.audit import AuditLog
    from insitu.federation.settings import SECTION, parse_federation

    key = public_key.strip().lower()
    if not _KEY_HEX.match(key):
        raise InvalidRequestError(
            f"{public_key!r} is not an identity key: copy the 64 hex digits that "
            "`insitu federation identity-key` prints at the other site"
        )
    config = load_config(home)
    section = dict(config.extra.get(SECTION, {}))
    section["trusted_homes"] = dict(section.get("trusted_homes", {})) | {site: key}
    parse_federation(section, str(home.config_path))  # validate before writing
    config = dataclasses.replace(config, extra=config.extra | {SECTION: section})
    home.config_path.write_text(config.to_toml())
    AuditLog(home).append("federation.trust", site=site, key=key)


def add_visitor(home: NodeHome, name: str, home_site: str, *, actor: str | None) -> str:
    """Create the local account of researcher ``name`` from ``home_site``; its name."""
    from insitu.hub.accounts import AccountStore

    if home_site == load_config(home).site.name:
        raise InvalidRequestError(f"{name} is a researcher of this site, not a visitor")
    account = local_account(Researcher(name=name, home=home_site), "")
    with AccountStore(home) as accounts:
        if accounts.get(account) is None:
            accounts.add(account, "researcher", None, actor=actor)
    return account
