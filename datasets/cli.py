"""``insitu ingest``, ``insitu datasets`` and ``insitu verify``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="de-identify DICOM into a new, immutable dataset version",
        description="Read DICOM files, folders (recursively) and .zip archives; group them "
        "into series; de-identify (DICOM PS3.15 Basic Profile); publish one checksummed "
        "Zarr store per dataset version. Bad files are copied to private/quarantine with "
        "their reason; the exit code is 3 when anything was quarantined or held back. "
        "Running it again on the same input publishes nothing new.",
    )
    ingest.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, folders, .zip files, or a PACS as dicomweb://host:port/path",
    )
    ingest.add_argument("--dataset", required=True, help="the dataset's name, e.g. trial-ct")
    ingest.add_argument("--title", default="", help="a human title for the dataset")
    ingest.add_argument("--citation", default="", help="how researchers should cite it")
    ingest.add_argument(
        "--allow-burned-in",
        action="store_true",
        default=None,
        help="publish images that may carry burned-in text (US, SC, ...) instead of holding "
        "them back (default: [deid] allow_burned_in in insitu.toml)",
    )
    ingest.add_argument("--json", action="store_true", help="print a machine-readable summary")
    from insitu.datasets.cli_pacs import add_pull_arguments  # light: PACS filters (issue 6)

    add_pull_arguments(ingest)
    ingest.set_defaults(handler=_cmd_ingest)

    datasets = sub.add_parser(
        "datasets",
        help="list datasets, versions, series and subject counts, size",
        description="List the published datasets of this node with every version's subject "
        "and series counts and size on disk.",
    )
    datasets.add_argument("--json", action="store_true", help="print machine-readable output")
    datasets.set_defaults(handler=_cmd_datasets)

    verify = sub.add_parser(
        "verify",
        help="re-check every checksum of a dataset version",
        description="Recompute the sha256 of every file of a published store and compare "
        "with the catalog. Exit 5 when anything is missing, changed or extra.",
    )
    verify.add_argument("name", help="the dataset")
    verify.add_argument("--version", default=None, help="a version, e.g. v2 (default: all)")
    verify.add_argument("--json", action="store_true", help="print machine-readable output")
    verify.set_defaults(handler=_cmd_verify)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.datasets.cli_pacs import pulled_paths
    from insitu.datasets.ingest import ingest

    with pulled_paths(args) as paths:  # dicomweb:// sources become staged files
        report = ingest(
            paths,
            args.dataset,
            title=args.title,
            citation=args.citation,
            allow_burned_in=args.allow_burned_in,
            show_progress=False if args.json else None,
        )
    if args.json:
        print_json(report.to_json())
        return report.exit_code
    for item in report.files:
        if item.fate == "published":
            continue
        print(f"{item.fate:12} {item.file}: {item.reason}")
    print(report.summary())
    if report.quarantine:
        print(f"quarantined copies and reasons: {report.quarantine}")
    return report.exit_code


def _cmd_datasets(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.config import resolve_home
    from insitu.datasets.catalog import Catalog

    home = resolve_home().require_initialized()
    with Catalog(home) as catalog:
        listing = []
        for row in catalog.datasets():
            versions = [
                {
                    "version": v["version"],
                    "subjects": v["n_subjects"],
                    "series": v["n_series"],
                    "bytes": v["bytes"],
                    "created": v["created"],
                }
                for v in catalog.versions(row["name"])
            ]
            listing.append(
                {"name": row["name"], "title": row["title"], "citation": row["citation"]}
                | {"versions": versions}
            )
    if args.json:
        print_json(listing)
        return 0
    if not listing:
        print("no datasets yet: run `insitu ingest PATH --dataset NAME`")
    for item in listing:
        print(f"{item['name']}" + (f"  {item['title']}" if item["title"] else ""))
        for v in item["versions"]:
            print(
                f"  {v['version']:5} {v['subjects']:5} subjects {v['series']:6} series "
                f"{v['bytes'] / 1e6:10.1f} MB  {v['created']}"
            )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.datasets.verify import verify

    results = verify(args.name, args.version)
    if args.json:
        print_json([r.to_json() for r in results])
    else:
        for r in results:
            state = "ok" if r.ok else "FAILED"
            print(f"{r.dataset} {r.version}: {state}, {r.checked} files checked")
            for problem in r.problems:
                print(f"  {problem}", file=sys.stderr)
    bad = [r for r in results if not r.ok]
    if bad:
        from insitu.errors import VerificationError

        raise VerificationError(
            ", ".join(f"{r.dataset} {r.version}" for r in bad)
            + " no longer match their checksums: restore them from backup or re-ingest"
        )
    return 0
