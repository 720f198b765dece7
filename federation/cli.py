"""``insitu federation ...``: run a coordinator, join a federation, decide on apps.

Heavy imports (flwr) happen inside the handlers so ``insitu --help`` stays fast.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

__all__ = ["register"]


def _home() -> Any:
    from insitu.config import resolve_home

    return resolve_home().require_initialized()


def _user(args: argparse.Namespace) -> str:
    """The decider: a steward or admin account named with --by (checked, as the hub CLI
    checks --as), else the node operator's login."""
    if args.by:
        from insitu.hub.accounts import require_role

        require_role(_home(), args.by, "steward", "admin")
        return str(args.by)
    return os.environ.get("USER") or getpass.getuser()


def _cmd_coordinator(args: argparse.Namespace) -> int:
    from insitu.federation import processes

    tls = processes.TlsOptions(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certfile)
    record = processes.start_coordinator(
        _home(),
        args.address,
        insecure=args.insecure,
        tls=tls,
        node_auth=False if args.no_node_auth else None,
    )
    node_auth = bool(record.extra.get("node_auth"))
    print(f"coordinator (Flower SuperLink) listening on {record.address}, pid {record.pid}")
    if record.insecure:
        print(
            "WARNING: insecure mode (plain HTTP, no TLS): allowed only because "
            f"{record.address} is a loopback address. Use TLS for real sites."
        )
    if node_auth:
        print("SuperNode authentication is on: register each site's public key with")
        print("  insitu federation register-node SITE.pub --ca CA.pem")
    else:
        print("WARNING: SuperNode authentication is off: any SuperNode may connect.")
    print("researchers need a Control API token: insitu federation token issue NAME@HOME")
    print(f"log: {record.log}")
    print(f"sites join with: insitu federation join {record.address} --dataset NAME")
    return 0


def _cmd_token_issue(args: argparse.Namespace) -> int:
    from insitu.federation.control_auth import ADMIN_ROLE, RESEARCHER_ROLE, issue_token

    role = ADMIN_ROLE if args.admin else RESEARCHER_ROLE
    token = issue_token(_home(), args.name, role=role)
    print(f"{role} token for {args.name} (shown once; give it to them privately):")
    print(token)
    return 0


def _cmd_token_install(args: argparse.Namespace) -> int:
    import sys

    from insitu.hub import researcher_tokens

    path = researcher_tokens.store(_home(), args.user, sys.stdin.readline())
    print(f"kept the coordinator token of {args.user} in {path} (0600); their server gets it")
    print("as $INSITU_COORDINATOR_TOKEN when it next starts")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from insitu.federation.control_auth import revoke_tokens

    print(f"revoked {revoke_tokens(_home(), args.name)} token(s) of {args.name}")
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.federation.control_auth import token_holders

    rows = token_holders(_home())
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        state = f"revoked {row['revoked']}" if row["revoked"] else "active"
        print(f"{row['holder']}  {row['role']}  issued {row['created']}  {state}")
    return 0


def _cmd_register_node(args: argparse.Namespace) -> int:
    from insitu.errors import ServiceError
    from insitu.federation import processes
    from insitu.federation.control_auth import register_node

    home = _home()
    record = processes.running(home, "coordinator")
    if record is None:
        raise ServiceError("no coordinator runs from this home: start it first")
    node_id = register_node(
        home, record.address, args.public_key, insecure=record.insecure, root_certificates=args.ca
    )
    print(f"registered SuperNode key {args.public_key} as node {node_id}")
    return 0


def _cmd_identity_key(args: argparse.Namespace) -> int:
    from insitu.config import load_config
    from insitu.hub.run_identity import identity_public_key

    home = _home()
    site = load_config(home).site.name
    print(f"# in [federation.trusted_homes] of the sites that accept {site}'s researchers:")
    print(f'{site} = "{identity_public_key(home)}"')
    return 0


def _cmd_trust(args: argparse.Namespace) -> int:
    from insitu.federation.trust import trust_home

    trust_home(_home(), args.site, args.key)
    print(f"this site now accepts researcher identities signed by {args.site!r}")
    return 0


def _cmd_visitor(args: argparse.Namespace) -> int:
    from insitu.federation.trust import add_visitor

    home = _home()
    if args.by:
        from insitu.hub.accounts import require_role

        require_role(home, args.by, "admin")
    account = add_visitor(home, args.name, args.home_site, actor=args.by)
    print(f"account {account!r} ready; its access requests go to a steward as usual")
    return 0


def _cmd_join(args: argparse.Namespace) -> int:
    from insitu.federation import processes

    record = processes.start_site(
        _home(),
        args.address,
        args.dataset,
        insecure=args.insecure,
        root_certificates=args.root_certificates,
        auth_private_key=args.auth_key,
        runtime_port=args.port,
        alias=args.alias,
    )
    site = record.extra["site"]
    print(
        f"site {site!r} joined the federation at {record.address} with dataset "
        f"{args.dataset!r} (site service pid {record.pid}, SuperNode runtime port "
        f"{record.extra['runtime_port']})"
    )
    if record.insecure:
        print(
            "WARNING: insecure mode (plain HTTP, no TLS): allowed only because the "
            "coordinator is on a loopback address."
        )
    print("only apps approved with `insitu federation approve` may read the dataset")
    print(f"log: {record.log}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from insitu.federation import processes

    stopped = processes.stop(_home())
    for line in stopped:
        print(f"stopped {line}")
    if not stopped:
        print("no federation process of this home was running")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.federation import processes

    home = _home()
    rows = {}
    for role in ("coordinator", "site"):
        record = processes.running(home, role)
        rows[role] = None if record is None else record.__dict__
    if args.json:
        print_json(rows)
        return 0
    for role, row in rows.items():
        if row is None:
            print(f"{role}: not running")
        else:
            print(f"{role}: running, pid {row['pid']}, {row['address']}, log {row['log']}")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from insitu.federation import approvals
    from insitu.federation.manifest import manifest_from_toml

    manifest = None
    if args.manifest:
        manifest = manifest_from_toml(Path(args.manifest).read_text())
    fab = None
    if args.app:
        from insitu.federation.apps import build_fab

        path = Path(args.app)
        fab = path.read_bytes() if path.is_file() else build_fab(path)
    approval = approvals.approve(
        _home(),
        args.fingerprint,
        args.dataset,
        days=args.days,
        user=_user(args),
        note=args.note,
        manifest=manifest,
        fab=fab,
    )
    print(
        f"approved app {approval.fingerprint} for dataset {approval.dataset!r} "
        f"until {approval.expires_at}; its replies may contain only:"
    )
    egress = approval.egress_manifest()
    for line in egress.describe() if egress is not None else []:
        print(f"  {line}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from insitu.federation import approvals

    for approval in approvals.revoke(_home(), args.fingerprint, args.dataset, user=_user(args)):
        print(f"revoked app {approval.fingerprint} for dataset {approval.dataset!r}")
    return 0


def _cmd_pending(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from insitu.cli_options import print_json
    from insitu.federation import approvals

    rows = approvals.pending(_home())
    if args.json:
        print_json([asdict(r) for r in rows])
        return 0
    if not rows:
        print("no refused apps are waiting for a decision")
    from insitu.federation.manifest import EgressManifest

    for row in rows:
        print(
            f"{row.fingerprint}  {row.app}  dataset={row.dataset}  attempts={row.attempts}  "
            f"last={row.last_seen}"
        )
        if row.manifest is None:
            print("  declares no egress manifest: approve it with --manifest FILE")
            continue
        print("  its egress manifest (what its replies would contain):")
        for line in EgressManifest.from_dict(row.manifest).describe():
            print(f"    {line}")
    return 0


def _cmd_approvals(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from insitu.cli_options import print_json
    from insitu.federation import approvals

    rows = approvals.approvals(_home())
    if args.json:
        print_json([asdict(r) | {"state": r.state()} for r in rows])
        return 0
    if not rows:
        print("no apps approved at this site")
    for row in rows:
        print(
            f"{row.fingerprint}  dataset={row.dataset}  {row.state()}  until {row.expires_at}  "
            f"by {row.approved_by}"
        )
    return 0


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    from insitu.federation.apps import fingerprint

    print(fingerprint(args.app))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from insitu.federation.tls import write_supernode_keys

    private, public = write_supernode_keys(_home())
    print(f"SuperNode private key: {private} (keep it at the site)")
    print(f"SuperNode public key:  {public} (send it to the coordinator to register)")
    return 0


def register(subparsers: Any) -> None:
    fed = subparsers.add_parser(
        "federation",
        help="Flower federation: coordinator, site SuperNode, app approvals",
        description="Run a Flower coordinator or join a federation as a site, and decide "
        "which federated apps may read this site's datasets (docs/federation.md).",
    )
    sub = fed.add_subparsers(dest="federation_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "coordinator",
        help="start a Flower SuperLink (the coordinator)",
        description="Start a Flower SuperLink (deployment engine) serving the Fleet, "
        "Control and Runtime APIs on one address. TLS unless --insecure on loopback.",
    )
    p.add_argument("--address", default="127.0.0.1:9093", help="HOST:PORT to serve on")
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback only)")
    p.add_argument("--ssl-certfile", help="server certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="server private key (PEM)")
    p.add_argument("--ssl-ca-certfile", help="CA certificate that signed the server certificate")
    p.add_argument(
        "--require-node-auth",
        action="store_true",
        help="(the default with TLS) only SuperNodes whose public keys were registered "
        "with `insitu federation register-node` may connect",
    )
    p.add_argument(
        "--no-node-auth",
        action="store_true",
        help="admit any SuperNode (Flower needs TLS for node authentication; --insecure "
        "implies this)",
    )
    p.set_defaults(handler=_cmd_coordinator)

    p = sub.add_parser(
        "token",
        help="Control API tokens of the coordinator (one per researcher)",
        description="Issue, revoke and list the tokens researchers use to submit runs to "
        "this coordinator; each researcher sees and stops only their own runs.",
    )
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("issue", help="a new token for NAME (printed once)")
    t.add_argument("name", help="the researcher, as NAME@HOME-SITE (e.g. alice@site-a)")
    t.add_argument("--admin", action="store_true", help="a coordinator admin token")
    t.set_defaults(handler=_cmd_token_issue)
    t = tsub.add_parser(
        "install",
        help="at a home site: keep USER's coordinator token (read from stdin) for their server",
    )
    t.add_argument("user", help="the researcher's account at this site")
    t.set_defaults(handler=_cmd_token_install)
    t = tsub.add_parser("revoke", help="revoke every token of NAME")
    t.add_argument("name")
    t.set_defaults(handler=_cmd_token_revoke)
    t = tsub.add_parser("list", help="holders and roles (never the tokens)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=_cmd_token_list)

    p = sub.add_parser(
        "register-node",
        help="admit a site's SuperNode key at this coordinator",
        description="Register a site's SuperNode public key (`insitu federation keygen` at "
        "the site) with the running coordinator of this home.",
    )
    p.add_argument("public_key", help="the site's SuperNode public key file")
    p.add_argument("--ca", default=None, help="CA certificate of the coordinator (PEM)")
    p.set_defaults(handler=_cmd_register_node)

    p = sub.add_parser(
        "identity-key",
        help="this site's researcher-identity public key",
        description="Print this site's Ed25519 identity key; other sites list it in "
        "[federation.trusted_homes] to accept runs by this site's researchers.",
    )
    p.set_defaults(handler=_cmd_identity_key)

    p = sub.add_parser(
        "trust",
        help="accept researcher identities signed by another site",
        description="Record another site's identity key in [federation.trusted_homes].",
    )
    p.add_argument("site", help="the other site's name")
    p.add_argument("key", help="its key (`insitu federation identity-key` there)")
    p.set_defaults(handler=_cmd_trust)

    p = sub.add_parser(
        "visitor",
        help="create the local account of a researcher from another site",
        description="Create the account NAME.HOME (no password) for a researcher whose "
        "home site is HOME; a steward then approves its access requests as usual.",
    )
    p.add_argument("name", help="their account name at their home site")
    p.add_argument("home_site", help="their home site")
    p.add_argument("--by", default=None, help="the admin account acting")
    p.set_defaults(handler=_cmd_visitor)

    p = sub.add_parser(
        "join",
        help="start this site's SuperNode for one dataset",
        description="Start this site's Flower SuperNode bound to this node home and one "
        "dataset; the site's executor runs only approved apps, inside the site's mods.",
    )
    p.add_argument("address", help="the coordinator's HOST:PORT")
    p.add_argument("--dataset", required=True, help="the dataset federated apps may read")
    p.add_argument(
        "--as",
        dest="alias",
        default=None,
        help="the name the federation uses for it (default: its name here)",
    )
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback only)")
    p.add_argument("--root-certificates", help="CA certificate of the coordinator (PEM)")
    p.add_argument("--auth-key", help="SuperNode private key (insitu federation keygen)")
    p.add_argument("--port", type=int, default=None, help="local Runtime API port (default: free)")
    p.set_defaults(handler=_cmd_join)

    p = sub.add_parser("stop", help="stop the coordinator and SuperNode this home started")
    p.set_defaults(handler=_cmd_stop)

    p = sub.add_parser("status", help="what federation processes this home runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser(
        "approve",
        help="let an app (by fingerprint) read a dataset, for N days",
        description="Approve a federated app by its fingerprint (the SHA-256 of its FAB, "
        "as Flower computes it) for one dataset until an expiry, together with its egress "
        "manifest: what its replies may contain (docs/federation.md).",
    )
    p.add_argument("fingerprint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--note", default="", help="why (kept in the audit log)")
    p.add_argument("--by", default=None, help="the steward deciding (default: $USER)")
    p.add_argument(
        "--manifest",
        default=None,
        help="egress manifest (TOML with [tool.insitu.egress]); default: the one the app "
        "declares (from --app, from its refused run in `pending`, or a built-in app's)",
    )
    p.add_argument("--app", default=None, help="the app's folder or .fab, to derive its manifest")
    p.set_defaults(handler=_cmd_approve)

    p = sub.add_parser("revoke", help="withdraw an app's approval")
    p.add_argument("fingerprint")
    p.add_argument("--dataset", default=None, help="only for this dataset (default: all)")
    p.add_argument("--by", default=None)
    p.set_defaults(handler=_cmd_revoke)

    p = sub.add_parser("pending", help="apps that tried to run and were refused")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_pending)

    p = sub.add_parser("approvals", help="every approval with its state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_approvals)

    p = sub.add_parser("fingerprint", help="the fingerprint (FAB SHA-256) of an app folder")
    p.add_argument("app", help="folder with the app's pyproject.toml")
    p.set_defaults(handler=_cmd_fingerprint)

    p = sub.add_parser("keygen", help="create this site's SuperNode authentication keys")
    p.set_defaults(handler=_cmd_keygen)
