"""Removing a site account, and what it held: the removal cascade.

Approvals are keyed by user name, so removing an account must also close
them, or a later account of the same name would inherit them. This module
sits above both stores (``insitu.hub.accounts`` keeps names and roles,
``insitu.hub.access`` the requests), so neither imports the other for it.
``insitu users remove`` and anything else that removes an account call
:func:`remove_account`; ``AccountStore.delete`` alone leaves approvals open.
"""

from __future__ import annotations

from insitu.config import NodeHome
from insitu.hub.access import Request, close_for_removed_account
from insitu.hub.accounts import AccountStore

__all__ = ["remove_account"]


def remove_account(home: NodeHome, name: str, *, actor: str | None) -> list[Request]:
    """Delete the account ``name``, revoke its approvals and deny its pending requests.

    Returns the closed requests. Every step is audited (``user`` action
    ``remove``, then ``access.revoke``/``access.deny`` by ``actor``). Raises
    ``InvalidRequestError`` when there is no such account.
    """
    with AccountStore(home) as store:
        store.delete(name, actor=actor)
    return close_for_removed_account(home, name, actor)
