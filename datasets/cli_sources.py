"""``insitu ingest-table`` and ``insitu ingest-derived`` (issue 6).

Measurement and clinical tables; DICOM SR measurements and SEG label volumes.

Registered through ``COMMAND_MODULES`` in insitu/cli.py; imports nothing heavy.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _cmd_ingest_table(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.datasets.tables_ingest import ingest_table

    report = ingest_table(
        args.dataset,
        args.table_file,
        subject_column=args.subject_column,
        table=args.table,
        date_columns=args.date_columns or (),
        drop=args.drop or (),
    )
    if args.json:
        print_json(report.to_json())
    else:
        shifted = ", ".join(report.dates_shifted) or "none"
        dropped = ", ".join(report.dropped) or "none"
        print(
            f"{args.dataset} {report.version}: table {report.table!r} with {report.rows} rows, "
            f"columns {', '.join(report.columns)}; dates shifted: {shifted}; dropped: {dropped}"
        )
    return 0


def _cmd_ingest_derived(args: argparse.Namespace) -> int:
    from insitu.cli_options import print_json
    from insitu.datasets.derived import ingest_derived

    report = ingest_derived(args.dataset, args.paths)
    if args.json:
        print_json(report.to_json())
    else:
        print(
            f"{args.dataset} {report.version}: {report.measurements} SR measurements, "
            f"{len(report.labels)} label volumes"
        )
        for name, reason in report.refused:
            print(f"  refused {name}: {reason}")
    return 1 if report.refused else 0


def register(sub: Any) -> None:
    derived = sub.add_parser(
        "ingest-derived",
        help="add DICOM SR measurements (TID 1500) and SEG label volumes to a dataset",
        description="Read SR and SEG objects made from a dataset's images and publish a new "
        "version: SR measurements become rows of the table sr_measurements, each SEG a label "
        "volume on its source series' grid (open_dataset(D).labels(series_id)). UIDs and "
        "subjects are keyed like the images'. Exit 1 when any file was refused.",
    )
    derived.add_argument("dataset", metavar="DATASET", help="the dataset the objects belong to")
    derived.add_argument("paths", nargs="+", metavar="PATH", help="SR/SEG files or folders")
    derived.add_argument("--json", action="store_true", help="print a machine-readable summary")
    derived.set_defaults(handler=_cmd_ingest_derived)

    parser = sub.add_parser(
        "ingest-table",
        help="attach a measurement or clinical table (CSV) to a dataset",
        description="De-identify a CSV table like the dataset's images and publish it as a "
        "new version: subject IDs become the images' pseudonyms (rows for subjects without "
        "images are refused), date columns are shifted by each subject's shift, columns "
        "that may identify someone (names, IDs, contact details, free text) are refused. "
        "Read it back with open_dataset(DATASET).tables[TABLE].",
    )
    parser.add_argument("dataset", metavar="DATASET", help="the dataset the table belongs to")
    parser.add_argument("table_file", metavar="TABLE.csv", help="the table, with a header row")
    parser.add_argument(
        "--subject-column", required=True, help="the column holding the patient IDs"
    )
    parser.add_argument("--table", help="the table's name (default: the file name's stem)")
    parser.add_argument(
        "--date-columns",
        nargs="+",
        metavar="COL",
        help="columns of dates (YYYYMMDD or YYYY-MM-DD) to shift; columns whose every "
        "value is a date are shifted anyway",
    )
    parser.add_argument(
        "--drop", nargs="+", metavar="COL", help="columns to leave out of the published table"
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    parser.set_defaults(handler=_cmd_ingest_table)
