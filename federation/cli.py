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
        _home(), args.address, insecure=args.insecure, tls=tls, node_auth=args.require_node_auth
    )
    print(f"coordinator (Flower SuperLink) listening on {record.address}, pid {record.pid}")
    if record.insecure:
        print(
            "WARNING: insecure mode (plain HTTP, no TLS): allowed only because "
            f"{record.address} is a loopback address. Use TLS for real sites."
        )
    if args.require_node_auth:
        print("SuperNode authentication is on: register each site's public key with")
        print(f"  flwr supernode register SITE.pub {args.connection}")
    print(f"log: {record.log}")
    print(f"sites join with: insitu federation join {record.address} --dataset NAME")
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
    from insitu.cli import print_json
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

    from insitu.cli import print_json
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

    from insitu.cli import print_json
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
        help="only SuperNodes whose public keys are registered may connect (needs TLS)",
    )
    p.add_argument(
        "--connection", default="insitu", help="name of the connection in $FLWR_HOME/config.toml"
    )
    p.set_defaults(handler=_cmd_coordinator)

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
