"""``insitu kernel install``: the researcher's kernel spec.

Heavy imports stay inside the handlers so ``insitu --help`` starts fast.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _cmd_kernel_install(args: argparse.Namespace) -> int:
    from insitu.kernels.kernelspec import install_kernelspec

    path = install_kernelspec(prefix=args.prefix, user=args.user)
    print(f"installed the insitu kernel spec at {path}")
    return 0


def register(sub: Any) -> None:
    kernel = sub.add_parser(
        "kernel",
        help="the researcher's kernel spec",
        description="Install the 'insitu' Jupyter kernel spec (Python with insitu loaded).",
    )
    kernel_actions = kernel.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    install = kernel_actions.add_parser("install", help="install the insitu kernel spec")
    install.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels")
    install.add_argument("--user", action="store_true", help="install for the current user")
    install.set_defaults(handler=_cmd_kernel_install)
