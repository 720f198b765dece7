"""``insitu dataset cite|citation``, ``insitu credit report``, ``insitu archive ...``.

Citing is a steward's act: with ``--as NAME`` (or ``$INSITU_USER``) the account
must be a steward or admin; without, the node operator acts (a shell on the
node is the admin's). Every change is audited (``dataset.cite``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from insitu.cli_options import add_as_option

__all__ = ["register"]

FORMATS = ("text", "cff", "datacite", "bibtex", "json")


def _home() -> Any:
    from insitu.config import resolve_home

    return resolve_home().require_initialized()


def _actor(args: argparse.Namespace, home: Any) -> str:
    import getpass

    from insitu.hub.accounts import require_role

    actor = getattr(args, "as_user", None) or os.environ.get("INSITU_USER") or None
    if actor is None:
        return f"{getpass.getuser()}@node"
    require_role(home, actor, "steward", "admin")
    return actor


def register(sub: Any) -> None:
    dataset = sub.add_parser(
        "dataset",
        help="one dataset version's citation and retirement (the credit ledger)",
        description="Set and show how a dataset version is cited; retire a version.",
    )
    actions = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    cite = actions.add_parser(
        "cite",
        help="set a version's citation: title, creators with ORCID, licence, DOI (steward)",
        description="Record how a dataset version is cited: its title, creators (with their "
        "ORCID iDs, check digit verified), licence (SPDX identifier) and optional DOI. "
        "Stewards and admins only; audited as dataset.cite.",
    )
    cite.add_argument("name", help="the dataset")
    cite.add_argument("--version", default=None, help="a version, e.g. v2 (default: newest)")
    cite.add_argument("--title", required=True, help="the version's title")
    cite.add_argument(
        "--creator",
        action="append",
        required=True,
        metavar="'NAME;ORCID[;AFFILIATION]'",
        help="a creator, e.g. 'Lovelace, Ada;0000-0002-1825-0097' (repeat for each)",
    )
    cite.add_argument("--licence", "--license", required=True, help="SPDX id, e.g. CC-BY-4.0")
    cite.add_argument("--doi", default="", help="a DOI, e.g. 10.5281/zenodo.1003150")
    cite.add_argument("--citation", default="", help="your own recommended citation text")
    add_as_option(cite)
    cite.set_defaults(handler=_cmd_cite)

    show = actions.add_parser(
        "citation",
        help="print a version's citation as text, CITATION.cff, DataCite JSON or BibTeX",
    )
    show.add_argument("name", help="the dataset")
    show.add_argument("--version", default=None, help="a version (default: newest)")
    show.add_argument("--format", choices=FORMATS, default="text", help="default: text")
    show.set_defaults(handler=_cmd_citation)

    _register_retire(actions)

    credit = sub.add_parser(
        "credit",
        help="usage of each dataset version: researchers, reads, federated runs, releases",
    )
    credit_actions = credit.add_subparsers(dest="credit_command", metavar="ACTION", required=True)
    report = credit_actions.add_parser(
        "report",
        help="COUNTER-style usage per dataset version and site, from the audit log",
    )
    report.add_argument("--json", action="store_true", help="print machine-readable output")
    report.set_defaults(handler=_cmd_credit_report)

    archive = sub.add_parser(
        "archive",
        help="export, verify and import archive packages (BagIt + RO-Crate)",
        description="A dataset version as a self-contained BagIt bag with an RO-Crate "
        "description; see docs/archiving.md.",
    )
    arch = archive.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    exp = arch.add_parser("export", help="write a version's package into a new folder")
    exp.add_argument("name", help="the dataset")
    exp.add_argument("--version", default=None, help="a version (default: newest)")
    exp.add_argument("--out", required=True, help="a new (or empty) folder")
    exp.set_defaults(handler=_cmd_export)
    ver = arch.add_parser("verify", help="check every checksum of a package and its crate")
    ver.add_argument("folder", help="the package folder")
    ver.add_argument("--json", action="store_true", help="print machine-readable output")
    ver.set_defaults(handler=_cmd_verify)
    imp = arch.add_parser(
        "import", help="bring a verified package in as the same version (all or nothing)"
    )
    imp.add_argument("folder", help="the package folder")
    add_as_option(imp)
    imp.set_defaults(handler=_cmd_import)


def _cmd_cite(args: argparse.Namespace) -> int:
    from insitu.datasets.citation import parse_creator
    from insitu.datasets.citations_db import set_citation

    home = _home()
    actor = _actor(args, home)
    citation = set_citation(
        home,
        actor=actor,
        dataset=args.name,
        version=args.version,
        title=args.title,
        creators=[parse_creator(c) for c in args.creator],
        licence=args.licence,
        doi=args.doi,
        recommended=args.citation,
    )
    print(f"{citation.dataset} {citation.version}: {citation.text()}")
    return 0


def _cmd_citation(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.datasets.citation import bibtex, cff, datacite
    from insitu.datasets.citations_db import citation_for

    citation = citation_for(_home(), args.name, args.version)
    if args.format == "cff":
        print(cff(citation), end="")
    elif args.format == "datacite":
        print_json(datacite(citation))
    elif args.format == "bibtex":
        print(bibtex([citation]), end="")
    elif args.format == "json":
        print_json(citation.to_json())
    else:
        print(citation.text())
        if citation.retired:
            print(citation.status())
    return 0


def _cmd_credit_report(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.hub.credit import usage_report

    rows = usage_report(_home())
    if args.json:
        print_json([r.to_json() for r in rows])
        return 0
    if not rows:
        print("no published datasets yet")
    for r in rows:
        print(
            f"{r.dataset} {r.version} ({r.site})" + (f" retired {r.retired}" if r.retired else "")
        )
        print(f"  cite: {r.citation}")
        print(
            f"  researchers {r.unique_researchers}; investigations {r.total_investigations} "
            f"(unique {r.unique_investigations}); requests {r.total_requests} "
            f"(unique {r.unique_requests}); federated runs {r.federated_runs} "
            f"({r.subjects_contributed} subjects); approved releases {r.approved_releases}"
        )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from insitu.hub.archive_package import export_package

    out = export_package(_home(), args.name, args.version, Path(args.out))
    print(f"package written to {out}: check it with `insitu archive verify {out}`")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from insitu.datasets.archive import verify
    from insitu.errors import VerificationError

    check = verify(Path(args.folder))
    if args.json:
        print(json.dumps(check.to_json(), indent=2, sort_keys=True))
    else:
        state = "ok" if check.ok else "FAILED"
        print(f"{check.dataset} {check.version}: {state}, {check.files} payload files checked")
    if not check.ok:
        raise VerificationError(
            f"{args.folder} is damaged or was changed: " + "; ".join(check.problems[:5])
        )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from insitu.datasets.archive import import_package

    home = _home()
    actor = getattr(args, "as_user", None) or os.environ.get("INSITU_USER") or ""
    if actor:
        from insitu.hub.accounts import require_role

        require_role(home, actor, "admin")
    done = import_package(home, Path(args.folder), actor=actor)
    print(f"{done['dataset']} {done['version']}: {done['status']}")
    return 0


def _cmd_dataset_retire(args: argparse.Namespace) -> int:
    import getpass

    from insitu.hub.retire import retire

    home = _home()
    actor = getattr(args, "as_user", None) or os.environ.get("INSITU_USER") or None
    done = retire(
        home, actor=actor or f"{getpass.getuser()}@node", dataset=args.name, version=args.version,
        reason=args.reason, delete_data=args.delete_data,
        archive=Path(args.archive) if args.archive else None, only_copy=args.only_copy,
        check_role=actor is not None,
    )  # fmt: skip
    kept = f"archive package {done['archive']}" if done["archive"] else "no archive package"
    store = "store deleted" if done["data_deleted"] else "store kept on disk, not readable"
    print(f"{done['dataset']} {done['version']} retired ({store}; {kept}); its citation stays")
    if done["closed_requests"]:
        print(
            f"no readable version of {done['dataset']} is left: closed access requests "
            + ", ".join(f"#{i}" for i in done["closed_requests"])
        )
    return 0


def _register_retire(actions: Any) -> None:
    retire = actions.add_parser(
        "retire",
        help="retire a version: its data is no longer read, its citation stays (steward)",
        description="Retire a dataset version: reads of it are refused (saying when and "
        "why), its catalog rows, citation, register entries and credit counts stay. The "
        "dataset's open access requests close when no readable version is left. Needs an "
        "archive package of the version (insitu archive export) or --only-copy; "
        "--delete-data also removes its store, only when a package exists. Stewards and "
        "admins only; audited as dataset.retire. See docs/archiving.md.",
    )
    retire.add_argument("name", help="the dataset")
    retire.add_argument("--version", required=True, help="the version to retire, e.g. v1")
    retire.add_argument("--reason", required=True, help="why (shown to anyone who reads it)")
    retire.add_argument(
        "--archive", default=None, metavar="DIR",
        help="the version's archive package (default: those `insitu archive export` wrote)",
    )  # fmt: skip
    retire.add_argument(
        "--delete-data", action="store_true",
        help="also delete the store (only when an intact archive package exists)",
    )  # fmt: skip
    retire.add_argument(
        "--only-copy", action="store_true",
        help="retire although no archive package exists (the store stays the only copy)",
    )  # fmt: skip
    add_as_option(retire)
    retire.set_defaults(handler=_cmd_dataset_retire)
