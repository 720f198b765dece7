"""``insitu airlock list|show|approve|deny``: the steward's side of the airlock.

Who acts follows the hub's CLI: ``--as NAME`` (or ``$INSITU_USER``) names the
site account; approving and denying need a steward or admin account (checked
like the REST API checks it), so every decision is attributable. Listing and
showing are open to the node operator (a shell on the node) and to stewards.

Heavy imports stay inside the handlers so ``insitu --help`` starts fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from insitu.cli_options import add_as_option
from insitu.errors import AccessDeniedError

__all__ = ["register"]

DECIDERS = ("steward", "admin")


def _home() -> Any:
    from insitu.config import resolve_home

    return resolve_home().require_initialized()


def _acting(args: argparse.Namespace) -> str | None:
    return getattr(args, "as_user", None) or os.environ.get("INSITU_USER") or None


def _steward(args: argparse.Namespace, home: Any) -> str:
    from insitu.hub.accounts import require_role

    actor = _acting(args)
    if actor is None:
        raise AccessDeniedError(
            "say which steward decides: add --as NAME (a steward or admin account) or set "
            "INSITU_USER"
        )
    require_role(home, actor, *DECIDERS)
    return actor


def _reader(args: argparse.Namespace, home: Any) -> None:
    """The node operator, or a named steward/admin, may read every request."""
    from insitu.hub.accounts import require_role

    actor = _acting(args)
    if actor is not None:
        require_role(home, actor, *DECIDERS)


def _line(request: Any) -> str:
    return (
        f"{request.id:>4}  {request.state:<9}  {request.status:<6}  {request.user:<12}  "
        f"{request.filename:<24}  {request.purpose[:40]}"
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.hub.airlock import Airlock

    home = _home()
    _reader(args, home)
    with Airlock(home) as airlock:
        requests = airlock.list(user=args.user, state=args.state)
    if args.json:
        print_json([r.to_dict() for r in requests])
        return 0
    if not requests:
        print("no release requests")
        return 0
    print(f"{'id':>4}  {'state':<9}  {'checks':<6}  {'user':<12}  {'file':<24}  purpose")
    for request in requests:
        print(_line(request))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.hub.airlock import Airlock

    home = _home()
    _reader(args, home)
    with Airlock(home) as airlock:
        request = airlock.get(args.id)
        preview = airlock.preview(request.id)
    if args.json:
        print_json(request.to_dict() | {"preview": preview})
        return 0
    print(
        f"release request {request.id}: {request.filename} ({request.kind}, {request.size} bytes)"
    )
    print(f"  by {request.user}, submitted {request.submitted}; state {request.state}")
    print(f"  purpose: {request.purpose}")
    print(f"  sha256: {request.sha256}")
    if request.decided:
        print(f"  decided by {request.decided_by} at {request.decided}: {request.reason}")
        if request.override_reason:
            print(f"  override: {request.override_reason}")
    print(f"  checks: {request.status}")
    for check in request.checks:
        print(f"    [{check['status']:<6}] {check['rule']} ({check['by']}): {check['summary']}")
    print("  preview:")
    for line in preview.splitlines():
        print(f"    {line}")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    from insitu.hub.airlock import Airlock

    home = _home()
    steward = _steward(args, home)
    with Airlock(home) as airlock:
        request = airlock.approve(
            args.id, steward=steward, reason=args.reason, override=args.override
        )
    note = " (overriding failed checks)" if request.override_reason else ""
    print(f"release request {request.id} approved by {steward}{note}")
    return 0


def _cmd_deny(args: argparse.Namespace) -> int:
    from insitu.hub.airlock import Airlock

    home = _home()
    steward = _steward(args, home)
    with Airlock(home) as airlock:
        request = airlock.deny(args.id, steward=steward, reason=args.reason)
    print(f"release request {request.id} denied by {steward}")
    return 0


def register(sub: Any) -> None:
    airlock = sub.add_parser(
        "airlock",
        help="review release requests (list, show, approve, deny)",
        description="The airlock: what researchers asked to take out, the automatic "
        "disclosure checks, and the steward's decision.",
    )
    actions = airlock.add_subparsers(dest="airlock_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list release requests")
    listing.add_argument("--user", help="only this researcher's requests")
    listing.add_argument(
        "--state",
        choices=("submitted", "approved", "denied", "released"),
        help="only requests in this state",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    add_as_option(listing)
    listing.set_defaults(handler=_cmd_list)

    show = actions.add_parser("show", help="a request's purpose, checks and a preview")
    show.add_argument("id", help="the request id (see `insitu airlock list`)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_as_option(show)
    show.set_defaults(handler=_cmd_show)

    approve = actions.add_parser(
        "approve",
        help="approve a request (failed checks need --override)",
        description="Approve a submitted request so its researcher can download it. A "
        "request whose checks failed needs a written --override reason.",
    )
    approve.add_argument("id", help="the request id")
    approve.add_argument("--reason", required=True, help="why it may leave (audited)")
    approve.add_argument("--override", help="why failed checks are acceptable here (audited)")
    add_as_option(approve)
    approve.set_defaults(handler=_cmd_approve)

    deny = actions.add_parser("deny", help="deny a request, with a reason")
    deny.add_argument("id", help="the request id")
    deny.add_argument("--reason", required=True, help="why (the researcher reads it)")
    add_as_option(deny)
    deny.set_defaults(handler=_cmd_deny)
