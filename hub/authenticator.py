"""JupyterHub authenticators backed by the site's account store.

- :class:`InsituAuthenticator` (embedded default): local accounts with argon2
  password hashes (``insitu users add``). Only known accounts may log in.
- :class:`InsituOIDCAuthenticator` (production): the institution's single
  sign-on through oauthenticator's ``GenericOAuthenticator``; the user's SSO
  groups decide the insitu role (``oidc_admin_groups``, ``oidc_steward_groups``,
  else researcher), which is written to the account store at each login so
  that the access rules see the same roles in both modes.

Either way the insitu role becomes a JupyterHub group of the same name, an
admin is a JupyterHub admin, and every login (and failed attempt) is audited.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.auth import Authenticator
from oauthenticator.generic import GenericOAuthenticator
from traitlets import Unicode

from insitu.audit import AuditLog
from insitu.config import NodeHome, resolve_home
from insitu.hub.accounts import AccountStore

__all__ = ["InsituAuthenticator", "InsituOIDCAuthenticator", "role_from_groups"]


class InsituAuthenticator(Authenticator):  # type: ignore[misc]  # jupyterhub is untyped
    """Username and password checked against ``hub/accounts.sqlite``."""

    insitu_home = Unicode(help="the node home (default: $INSITU_HOME)").tag(config=True)

    def _home(self) -> NodeHome:
        return resolve_home(self.insitu_home or None)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        name = (data.get("username") or "").strip().lower()
        password = data.get("password") or ""
        home = self._home()
        with AccountStore(home) as store:
            account = store.check_password(name, password)
        if account is None:
            AuditLog(home).append("login", user=name[:64] or None, outcome="refused")
            return None
        AuditLog(home).append("login", user=name, outcome="ok", method="password")
        return {"name": name, "admin": account.role == "admin", "groups": [account.role]}

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        with AccountStore(self._home()) as store:
            return store.get(username) is not None


def role_from_groups(groups: set[str], admin_groups: set[str], steward_groups: set[str]) -> str:
    if groups & admin_groups:
        return "admin"
    if groups & steward_groups:
        return "steward"
    return "researcher"


class InsituOIDCAuthenticator(GenericOAuthenticator):  # type: ignore[misc]  # untyped
    """The institution's OIDC single sign-on; roles from SSO groups."""

    insitu_home = Unicode(help="the node home (default: $INSITU_HOME)").tag(config=True)
    steward_groups_list = Unicode(
        "", help="comma-separated SSO groups whose members are stewards"
    ).tag(config=True)

    def _home(self) -> NodeHome:
        return resolve_home(self.insitu_home or None)

    def _role(self, groups: set[str]) -> str:
        stewards = {g for g in self.steward_groups_list.split(",") if g}
        return role_from_groups(groups, set(self.admin_groups), stewards)

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        groups = set(await super().get_user_groups(auth_state))
        return groups | {self._role(groups)}

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        groups = set(await super().get_user_groups(auth_model.get("auth_state") or {}))
        role = self._role(groups)
        home = self._home()
        with AccountStore(home) as store:
            store.sync_sso(auth_model["name"], role)
        AuditLog(home).append("login", user=auth_model["name"], outcome="ok", method="oidc")
        return auth_model
