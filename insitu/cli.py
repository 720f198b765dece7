"""The ``insitu`` command.

Each component adds its own subcommands through ``register(subparsers)`` in
its ``cli`` module; handlers import heavy libraries themselves so that
``insitu --help`` starts fast. A handler returns the exit code; an
:class:`~insitu.errors.InsituError` becomes ``insitu: error: ...`` and the
error's documented exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from insitu.errors import EXIT_ERROR, InsituError

__all__ = ["build_parser", "main"]

# Component command modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "insitu.datasets.cli",
    "insitu.datasets.cli_pacs",
    "insitu.datasets.cli_sources",
    "insitu.hub.cli_credit",
    "insitu.datasets.cli_fingerprints",
    "insitu.hub.cli",
    "insitu.hub.cli_airlock",
    "insitu.kernels.cli",
    "insitu.federation.cli",
    "insitu.demo",
)

Handler = Callable[[argparse.Namespace], int]


def _cmd_init(args: argparse.Namespace) -> int:
    from insitu.audit import AuditLog
    from insitu.config import init_home, load_config, resolve_home

    home = resolve_home()
    existed = home.config_path.exists()
    config = init_home(home, args.site, hub_port=args.port)
    from insitu.datasets.catalog import Catalog

    Catalog(home).close()
    if not existed:
        AuditLog(home).append("config", user=os.environ.get("USER"), action="init", site=args.site)
    # As root the embedded node isolates researchers by default (finding S1); a home made
    # before that default is moved to per-user accounts here (once: nothing to do after).
    from insitu.hub.isolation import isolate, needs_isolation

    migrate = existed and needs_isolation(load_config(home))
    isolate(home)
    accounts = load_config(home).hub.user_accounts_dir
    if migrate and accounts:
        AuditLog(home).append(
            "config", user=os.environ.get("USER"), action="isolate", accounts_dir=accounts
        )
    state = "already initialised" if existed else "initialised"
    print(f"{home.root}: site {config.site.name!r} {state}")
    if accounts:
        print(f"researchers run as their own Unix accounts, folders in {accounts}")
    if migrate and accounts and (home.hub / "users").is_dir():
        print(
            f"their old folders stay in {home.hub / 'users'} (root only now): copy what a "
            f"researcher needs into {accounts}/<name> after their first login"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insitu",
        description="Run an insitu site node: ingest, hub, enclave, airlock and federation.",
    )
    parser.add_argument(
        "--home",
        help="the node home (default: $INSITU_HOME, else ~/.local/share/insitu)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init = sub.add_parser(
        "init",
        help="create the node home (insitu.toml, site key, catalog)",
        description="Create the node home with insitu.toml, a site secret in private/ "
        "(mode 0600) and the catalog. Safe to run again: nothing is replaced.",
    )
    init.add_argument("--site", default="site", help="the site's name (default: site)")
    init.add_argument("--port", type=int, default=None, help="the hub's port (default 8765)")
    init.set_defaults(handler=_cmd_init)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # component not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home:
        os.environ["INSITU_HOME"] = args.home
    handler: Handler = args.handler
    try:
        return handler(args)
    except InsituError as exc:
        print(f"insitu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("insitu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
