"""``insitu up|down|status``, ``insitu users ...``, ``insitu access ...``, ``insitu audit ...``.

Who acts: ``--as NAME`` (or ``$INSITU_USER``) names the site account a
command acts for; its role is checked exactly as the REST API checks it, so a
researcher is refused a steward's action here too. Without either, the
command acts as the node operator (the person with a shell on the node), who
may manage users and read the audit log but must name a steward to decide a
request: decisions are always attributable to a site account.

Heavy imports stay inside the handlers so ``insitu --help`` starts fast.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any

from insitu.cli_options import add_as_option
from insitu.errors import AccessDeniedError, ConfigError, InvalidRequestError

__all__ = ["register"]

ROLES = ("researcher", "steward", "admin")  # mirrors insitu.hub.accounts.ROLES


def _home() -> Any:
    from insitu.config import resolve_home

    return resolve_home().require_initialized()


def _acting(args: argparse.Namespace) -> str | None:
    """The site account named with --as / $INSITU_USER; None for the node operator."""
    return getattr(args, "as_user", None) or os.environ.get("INSITU_USER") or None


def _operator() -> str:
    return f"{getpass.getuser()}@node"


def _require_admin_or_operator(args: argparse.Namespace, home: Any) -> str:
    from insitu.hub.accounts import AccountStore, require_role

    actor = _acting(args)
    if actor is None:
        return _operator()
    with AccountStore(home) as store:
        if not any(a.role == "admin" for a in store.list()):
            return actor  # bootstrap: the first admin is created by whoever runs the node
    require_role(home, actor, "admin")
    return actor


def _named(args: argparse.Namespace, what: str) -> str:
    actor = _acting(args)
    if actor is None:
        raise AccessDeniedError(
            f"say who {what}: add --as NAME (a site account) or set INSITU_USER"
        )
    return actor


def _read_password(args: argparse.Namespace, name: str) -> str | None:
    if args.no_password:
        return None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidRequestError("--password-stdin read an empty line")
        return password
    if not sys.stdin.isatty():
        raise InvalidRequestError(
            "no terminal to ask for a password: pipe it with --password-stdin, or use "
            "--no-password for a single-sign-on account"
        )
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != first:
        raise InvalidRequestError("the two passwords differ; nothing was changed")
    return first


# --- up / down / status ---------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    import signal

    from insitu.config import load_config
    from insitu.hub import lifecycle
    from insitu.hub.isolation import local_mode_warning, needs_isolation, shared_home_refusal

    home = _home()
    already = lifecycle.read_state(home)
    if already is None and needs_isolation(load_config(home)):
        # As root, a home from before per-user accounts would run researchers as root.
        raise ConfigError(shared_home_refusal(home))
    state = lifecycle.up(home, port=args.port, actor=_acting(args) or _operator())
    print(f"hub {'already running' if already else 'running'} at {state.url}/")
    # Finding S1: say it every time, on stderr so scripts reading the URL are unaffected.
    warning = local_mode_warning(load_config(home).hub.user_accounts_dir)
    if warning:
        print(f"{'!' * 78}\n{warning}\n{'!' * 78}", file=sys.stderr)
    logins = lifecycle.demo_logins(home)
    if logins:
        print("demo logins:\n" + logins.rstrip())
    if not args.foreground:
        print("stop it with `insitu down`")
        return 0

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Install both explicitly: a process started in the background may inherit an
    # ignored SIGINT, and Ctrl-C must stop the hub all the same. The prompt comes
    # only once the handlers and the `finally` below are in place, so a Ctrl-C
    # right after it still stops the hub.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        print("press Ctrl-C to stop", flush=True)
        # Wake every second to notice a hub stopped from elsewhere; a signal taken
        # here (instead of by the handlers) ends the wait as well.
        while lifecycle.read_state(home) is not None:
            if signal.sigtimedwait([signal.SIGINT, signal.SIGTERM], 1.0) is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        lifecycle.down(home, actor=_acting(args) or _operator())
        print("hub stopped")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from insitu.hub import lifecycle

    home = _home()
    stopped = lifecycle.down(home, actor=_acting(args) or _operator())
    print("hub stopped" if stopped else "the hub was not running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.hub import lifecycle

    info = lifecycle.status(_home())
    if args.json:
        print_json(info)
        return 0
    if not info["running"]:
        print("the hub is not running: start it with `insitu up`")
        return 0
    health = "answers" if info["answers"] else "DOES NOT ANSWER"
    print(f"hub at {info['url']}/ (pid {info['pid']}, since {info['started']}): {health}")
    for name, svc in sorted(info["services"].items()):
        ok = {True: "answers", False: "DOES NOT ANSWER", None: "running"}[svc["answers"]]
        print(f"  service {name:<10} {svc['url'] or '-':<24} {ok}")
    servers = info.get("servers")
    if servers is not None:
        print(f"  user servers: {', '.join(servers) if servers else 'none'}")
    return 0


# --- users -------------------------------------------------------------------


def _cmd_users_add(args: argparse.Namespace) -> int:
    from insitu.hub.accounts import AccountStore

    home = _home()
    actor = _require_admin_or_operator(args, home)
    password = _read_password(args, args.name)
    with AccountStore(home) as store:
        account = store.add(args.name, args.role, password, actor=actor)
    print(f"added {account.name} ({account.role})")
    return 0


def _cmd_users_list(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.hub.accounts import AccountStore

    home = _home()
    with AccountStore(home) as store:
        accounts = store.list()
    if args.json:
        print_json([a.__dict__ for a in accounts])
        return 0
    if not accounts:
        print("no users yet: add one with `insitu users add NAME --role admin`")
    for a in accounts:
        login = "password" if a.has_password else "single sign-on"
        print(f"{a.name:<24} {a.role:<10} {login:<14} last login {a.last_login or 'never'}")
    return 0


def _cmd_users_remove(args: argparse.Namespace) -> int:
    from insitu.hub.account_removal import remove_account

    home = _home()
    actor = _require_admin_or_operator(args, home)
    remove_account(home, args.name, actor=actor)
    print(f"removed {args.name}")
    return 0


def _cmd_users_role(args: argparse.Namespace) -> int:
    from insitu.hub.accounts import AccountStore

    home = _home()
    actor = _require_admin_or_operator(args, home)
    with AccountStore(home) as store:
        account = store.set_role(args.name, args.role, actor=actor)
    print(f"{account.name} is now a {account.role}")
    return 0


def _cmd_users_password(args: argparse.Namespace) -> int:
    from insitu.hub.accounts import AccountStore

    home = _home()
    actor = _require_admin_or_operator(args, home)
    args.no_password = False
    password = _read_password(args, args.name)
    assert password is not None
    with AccountStore(home) as store:
        store.set_password(args.name, password, actor=actor)
    print(f"password of {args.name} changed")
    return 0


# --- access ------------------------------------------------------------------


def _print_requests(requests: list[Any], as_json: bool) -> None:
    from insitu.cli_options import print_json

    now = datetime.now(UTC)
    if as_json:
        print_json([r.to_json(now) for r in requests])
        return
    if not requests:
        print("no access requests yet")
    for r in requests:
        state = r.state(now)
        line = f"#{r.id:<4} {r.user:<16} {r.dataset:<20} {state:<9} {r.project}"
        if state in ("approved", "expired"):
            line += f"  (by {r.decided_by}, until {r.expires_at})"
        elif state == "denied":
            line += f"  (by {r.decided_by}: {r.decision_reason})"
        elif state == "revoked":
            line += f"  (by {r.revoked_by} on {r.revoked_at}: {r.revoke_reason})"
        print(line)


def _cmd_access_request(args: argparse.Namespace) -> int:
    from insitu.hub import access

    home = _home()
    user = _named(args, "requests access")
    found = access.request(home, user, args.dataset, args.purpose, args.project, args.days)
    print(f"request #{found.id} filed for {found.dataset}: a steward will decide")
    return 0


def _cmd_access_approve(args: argparse.Namespace) -> int:
    from insitu.hub import access

    home = _home()
    steward = _named(args, "approves")
    expires = None
    if args.expires:
        try:
            expires = datetime.fromisoformat(args.expires)
        except ValueError:
            raise InvalidRequestError(
                f"--expires {args.expires!r} is not a date: use e.g. 2027-01-31 or "
                "2027-01-31T12:00+00:00"
            ) from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
    found = access.approve(
        home, steward, args.request_id, args.reason, days=args.days, expires=expires
    )
    print(f"request #{found.id} approved: {found.user} may read {found.dataset} until "
          f"{found.expires_at}")  # fmt: skip
    return 0


def _cmd_access_deny(args: argparse.Namespace) -> int:
    from insitu.hub import access

    home = _home()
    found = access.deny(home, _named(args, "denies"), args.request_id, args.reason)
    print(f"request #{found.id} denied")
    return 0


def _cmd_access_revoke(args: argparse.Namespace) -> int:
    from insitu.hub import access

    home = _home()
    found = access.revoke(home, _named(args, "revokes"), args.request_id, args.reason)
    print(f"approval #{found.id} revoked: {found.user}'s next read of {found.dataset} is refused")
    return 0


def _cmd_access_list(args: argparse.Namespace) -> int:
    from insitu.hub import access

    home = _home()
    _print_requests(access.register(home, user=args.user, dataset=args.dataset), args.json)
    return 0


# --- audit -------------------------------------------------------------------


def _parse_time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"{flag} {text!r} is not a date or time: use e.g. 2026-11-26 or 2026-11-26T09:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from insitu.audit import AuditLog
    from insitu.hub.accounts import require_role

    home = _home()
    actor = _acting(args)
    if actor is not None:
        require_role(home, actor, "steward", "admin")
    report = AuditLog(home).verify(Path(args.file) if args.file else None)
    print(f"audit chain intact: {report.entries} entries, last hash {report.last_hash[:16]}...")
    return 0


def _cmd_audit_show(args: argparse.Namespace) -> int:
    import json

    from insitu.audit import AuditLog
    from insitu.cli_options import print_json
    from insitu.hub.accounts import require_role

    home = _home()
    actor = _acting(args)
    if actor is not None:
        require_role(home, actor, "steward", "admin")
    entries = AuditLog(home).query(
        user=args.user,
        dataset=args.dataset,
        kind=args.kind,
        since=_parse_time(args.since, "--since"),
        until=_parse_time(args.until, "--until"),
    )
    if args.limit:
        entries = entries[-args.limit :]
    if args.json:
        print_json(entries)
        return 0
    for e in entries:
        details = json.dumps(e.get("details", {}), sort_keys=True)
        print(
            f"{e['seq']:>6} {e['time'][:19]} {e['kind']:<16} {e.get('user') or '-':<16} "
            f"{e.get('dataset') or '-':<18} {details}"
        )
    return 0


# --- registration -----------------------------------------------------------


def register(sub: Any) -> None:
    """Add the hub's commands to the ``insitu`` parser."""
    up = sub.add_parser(
        "up",
        help="start the site hub and its services",
        description="Start JupyterHub (with configurable-http-proxy), the data gate and the "
        "access service on 127.0.0.1; wait until they answer; print the URL.",
    )
    up.add_argument("--port", type=int, help="the hub's port (default: hub.port in insitu.toml)")
    up.add_argument(
        "--foreground", action="store_true", help="stay attached; Ctrl-C stops everything"
    )
    add_as_option(up)
    up.set_defaults(handler=_cmd_up)
    down = sub.add_parser(
        "down", help="stop the hub and all it started", description="Stop the hub, its "
        "proxy, services and user servers.",
    )  # fmt: skip
    add_as_option(down)
    down.set_defaults(handler=_cmd_down)
    st = sub.add_parser("status", help="what runs", description="Say what runs.")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_cmd_status)

    users = sub.add_parser(
        "users",
        help="manage the site's accounts and roles",
        description="Local accounts of the hub: names, roles (researcher, steward, admin) "
        "and argon2-hashed passwords. Passwords are read from a prompt or --password-stdin, "
        "never from the command line.",
    )
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = users_sub.add_parser("add", help="add an account", description="Add an account.")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="researcher")
    pw = add.add_mutually_exclusive_group()
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw.add_argument(
        "--no-password", action="store_true", help="single-sign-on account (no local login)"
    )
    add_as_option(add)
    add.set_defaults(handler=_cmd_users_add)
    ls = users_sub.add_parser("list", help="list accounts", description="List accounts.")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_users_list)
    rm = users_sub.add_parser("remove", help="remove an account", description="Remove one.")
    rm.add_argument("name")
    add_as_option(rm)
    rm.set_defaults(handler=_cmd_users_remove)
    role = users_sub.add_parser("role", help="change a role", description="Change a role.")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    add_as_option(role)
    role.set_defaults(handler=_cmd_users_role)
    passwd = users_sub.add_parser(
        "password", help="set a password", description="Set an account's password."
    )
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    add_as_option(passwd)
    passwd.set_defaults(handler=_cmd_users_password)

    acc = sub.add_parser(
        "access",
        help="request, approve, deny, revoke and list data access",
        description="Access requests and the public register of decisions. Stewards and "
        "admins decide; nobody decides their own request; revocation applies to the very "
        "next read.",
    )
    acc_sub = acc.add_subparsers(dest="access_command", metavar="ACTION", required=True)
    req = acc_sub.add_parser("request", help="ask for access", description="Ask for access.")
    req.add_argument("dataset")
    req.add_argument("--purpose", required=True, help="what the data will be used for")
    req.add_argument("--project", required=True, help="the project or study it serves")
    req.add_argument("--days", type=int, default=90, help="how long (default 90)")
    add_as_option(req)
    req.set_defaults(handler=_cmd_access_request)
    appr = acc_sub.add_parser("approve", help="approve a request", description="Approve.")
    appr.add_argument("request_id", type=int)
    appr.add_argument("--reason", required=True)
    when = appr.add_mutually_exclusive_group()
    when.add_argument("--days", type=int, help="valid for this many days (default: as asked)")
    when.add_argument("--expires", help="valid until this date/time (UTC if no zone)")
    add_as_option(appr)
    appr.set_defaults(handler=_cmd_access_approve)
    for name, handler, text in (
        ("deny", _cmd_access_deny, "deny a pending request"),
        ("revoke", _cmd_access_revoke, "end an approval now"),
    ):
        p = acc_sub.add_parser(name, help=text, description=text.capitalize() + ".")
        p.add_argument("request_id", type=int)
        p.add_argument("--reason", required=True)
        add_as_option(p)
        p.set_defaults(handler=handler)
    reg = acc_sub.add_parser(
        "list", help="the register of requests and decisions", description="The register."
    )
    reg.add_argument("--user")
    reg.add_argument("--dataset")
    reg.add_argument("--json", action="store_true")
    reg.set_defaults(handler=_cmd_access_list)

    audit = sub.add_parser(
        "audit",
        help="verify and search the hash-chained audit log",
        description="The audit log: `verify` proves the hash chain unbroken (or names the "
        "first bad entry, exit 5); `show` filters entries.",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    ver = audit_sub.add_parser("verify", help="check the chain", description="Check the chain.")
    ver.add_argument("--file", help="verify this copy of the log instead of the live one")
    add_as_option(ver)
    ver.set_defaults(handler=_cmd_audit_verify)
    show = audit_sub.add_parser("show", help="filter entries", description="Filter entries.")
    show.add_argument("--user")
    show.add_argument("--dataset")
    show.add_argument("--kind", help="e.g. read, access (prefix), access.approve")
    show.add_argument("--since", help="ISO date or time (UTC if no zone)")
    show.add_argument("--until", help="ISO date or time (UTC if no zone)")
    show.add_argument("--limit", type=int, help="only the last N matches")
    show.add_argument("--json", action="store_true")
    add_as_option(show)
    show.set_defaults(handler=_cmd_audit_show)
