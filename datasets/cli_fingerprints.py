"""``insitu fingerprints``: the pixel-provenance index of the site's series.

Registered through ``COMMAND_MODULES`` in insitu/cli.py; imports nothing heavy.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["register"]


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from insitu.audit import AuditLog
    from insitu.cli_options import print_json
    from insitu.config import resolve_home
    from insitu.datasets.fingerprints import rebuild

    home = resolve_home().require_initialized()
    report = rebuild(home, fresh=args.fresh)
    AuditLog(home).append(
        "fingerprints.rebuild",
        user=os.environ.get("USER"),
        fresh=args.fresh,
        versions=len(report.versions),
        series=report.series,
    )
    if args.json:
        print_json(report.to_json())
    else:
        print(
            f"fingerprinted {report.series} new series of {len(report.versions)} published "
            f"version(s); the index compares outputs with {report.planes} planes"
        )
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "fingerprints",
        help="the pixel-provenance index the airlock compares outputs with",
        description="Every published series is fingerprinted at ingest (private/fingerprints, "
        "node only); the airlock and the federation's checker fail any output carrying "
        "pixels of one of them.",
    )
    commands = parser.add_subparsers(dest="fingerprints_command", metavar="COMMAND", required=True)
    rebuild = commands.add_parser(
        "rebuild",
        help="fingerprint every published series (stores published before the index existed)",
        description="Read every published version's series (their coarsest pyramid level "
        "that is at least 64 pixels wide) and add what the index lacks. Safe to run again.",
    )
    rebuild.add_argument(
        "--fresh", action="store_true", help="drop the index first and fingerprint everything"
    )
    rebuild.add_argument("--json", action="store_true", help="print a machine-readable summary")
    rebuild.set_defaults(handler=_cmd_rebuild)
