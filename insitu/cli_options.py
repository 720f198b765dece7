"""Command-line helpers every component's ``cli`` module shares (``--as``, ``--json``).

On the ground floor so that component CLIs need not import the orchestrator
:mod:`insitu.cli`, which imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_as_option", "print_json"]


def print_json(data: Any) -> None:
    """Machine-readable output for ``--json`` flags."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def add_as_option(parser: argparse.ArgumentParser) -> None:
    """``--as NAME``: the site account acting; role checks apply as at the REST API."""
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="NAME",
        help="the site account acting (default: $INSITU_USER, else the node operator)",
    )
