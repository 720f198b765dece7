"""``insitu receive`` and the PACS options of ``insitu ingest dicomweb://...``.

Light at import time: pynetdicom, dicomweb-client and requests load only when
a PACS command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["add_pull_arguments", "pulled_paths", "register"]


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    """The trial filters of a ``dicomweb://`` source (on ``insitu ingest``)."""
    group = parser.add_argument_group(
        "PACS sources (dicomweb://host:port/path, or dicomweb:// for pacs.url)",
        "QIDO-RS finds the studies, WADO-RS fetches them into private/staging; credentials "
        "come from [pacs] in insitu.toml, never from the command line. At least one filter "
        "is required.",
    )
    group.add_argument(
        "--accession",
        action="append",
        default=[],
        metavar="A",
        help="an accession number to fetch (repeat for several)",
    )
    group.add_argument(
        "--accessions-from",
        metavar="FILE",
        default=None,
        help="a file with one accession number per line",
    )
    group.add_argument(
        "--date-range",
        default="",
        metavar="YYYYMMDD-YYYYMMDD",
        help="study dates to fetch (either end may be open, e.g. 20240101-)",
    )
    group.add_argument("--modality", default="", help="only series of this modality, e.g. CT")


def _query(args: argparse.Namespace) -> Any:
    from insitu.datasets.dicomweb import PacsQuery
    from insitu.errors import SourceError

    accessions = list(args.accession)
    if args.accessions_from:
        try:
            lines = Path(args.accessions_from).read_text().splitlines()
        except OSError as exc:
            raise SourceError(f"--accessions-from: cannot read the file: {exc.strerror}") from None
        accessions += [line.strip() for line in lines if line.strip()]
    return PacsQuery(
        accessions=tuple(dict.fromkeys(accessions)),
        date_range=args.date_range,
        modality=args.modality.upper(),
    )


@contextmanager
def pulled_paths(args: argparse.Namespace) -> Iterator[list[str]]:
    """``args.paths`` with every dicomweb:// source replaced by its staged files."""
    has_filter = args.accession or args.accessions_from or args.date_range or args.modality
    if not has_filter and not any(str(p).lower().startswith("dicomweb") for p in args.paths):
        yield list(args.paths)
        return
    from insitu.datasets.dicomweb import pulled_sources

    def echo(line: str) -> None:
        print(f"pulled {line}", file=sys.stderr)

    show = False if getattr(args, "json", False) else None
    with pulled_sources(
        args.paths, _query(args), dataset=args.dataset, show_progress=show, echo=echo
    ) as paths:
        yield paths


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds, 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a TCP port is 0-65535 (0 picks a free one)")
    return value


def register(sub: Any) -> None:
    receive = sub.add_parser(
        "receive",
        help="receive DICOM pushed by a PACS (C-STORE) and ingest it in batches",
        description="Run a DICOM C-STORE receiver. Each instance is staged under "
        "private/staging/received/<dataset>/ as it arrives; after a quiet period, and on "
        "SIGTERM or Ctrl-C, everything received for the dataset is ingested as its next "
        "version. Defaults come from [pacs] in insitu.toml (receive_host, receive_port, "
        "receive_ae_title, receive_allowed_aes, receive_batch_seconds).",
    )
    receive.add_argument("--dataset", required=True, help="the dataset to ingest into")
    receive.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    receive.add_argument(
        "--port", type=_port, default=None, help="TCP port (default 11112; 0 picks a free one)"
    )
    receive.add_argument("--ae-title", default=None, help="this receiver's AE title (INSITU)")
    receive.add_argument(
        "--batch-seconds",
        type=_seconds,
        default=None,
        help="quiet seconds before a batch is ingested (default 30)",
    )
    receive.set_defaults(handler=_cmd_receive)


def _cmd_receive(args: argparse.Namespace) -> int:
    import signal
    import threading

    from insitu.config import resolve_home
    from insitu.datasets.pacs_config import load_pacs_settings
    from insitu.datasets.receive import Receiver

    home = resolve_home().require_initialized()
    settings = load_pacs_settings(home)
    receiver = Receiver(
        args.dataset,
        home=home,
        host=args.host or settings.receive_host,
        port=settings.receive_port if args.port is None else args.port,
        ae_title=args.ae_title or settings.receive_ae_title,
        batch_seconds=(
            settings.receive_batch_seconds if args.batch_seconds is None else args.batch_seconds
        ),
        allowed_aes=settings.receive_allowed_aes,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if receiver.host not in ("127.0.0.1", "::1", "localhost") and not receiver.allowed_aes:
        print(
            f"insitu receive: warning: listening on {receiver.host} for any calling AE title; "
            "set pacs.receive_allowed_aes in insitu.toml to let in only the site's PACS",
            file=sys.stderr,
        )
    try:
        host, port = receiver.start()
        print(
            f"insitu receive: listening on {host}:{port} as AE {receiver.ae_title!r} for "
            f"dataset {args.dataset!r}; a batch is ingested after {receiver.batch_seconds:g} s "
            "without new instances, and on SIGTERM or Ctrl-C",
            flush=True,
        )
        code: int = receiver.serve(stop)
    finally:
        receiver.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"insitu receive: stopped after {receiver.batches} batch(es)", flush=True)
    return code
