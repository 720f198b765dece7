"""``insitu.release``: send a result to the site's airlock from a notebook.

The kernel finds the airlock at ``$INSITU_AIRLOCK_URL`` and authenticates with
the server's ``$JUPYTERHUB_API_TOKEN``; both are set by the hub, so a
researcher never handles either. The output's checks run at submission and
come back at once; a steward decides later, and an approved output is
downloaded from the browser at the link :attr:`Release.download_url` gives.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insitu.errors import (
    InvalidRequestError,
    ServiceError,
    UnsupportedOutputError,
)

__all__ = ["Release", "release", "releases"]

AIRLOCK_ENV = "INSITU_AIRLOCK_URL"
PUBLIC_ENV = "INSITU_AIRLOCK_PUBLIC_URL"  # the hub's address of the airlock, for browsers
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 (a variable name)
SUPPORTED = (
    "a pandas DataFrame (released as CSV), a matplotlib Figure (PNG), a notebook or a file "
    "path (.csv, .tsv, .json, .txt, .md, .ipynb, .png, .jpg, .gif, .tif, .pdf, .pt, .safetensors, "
    ".npz, .npy, .zip)"
)


@dataclass(frozen=True)
class Release:
    """A release request as the airlock answered it."""

    id: int
    state: str
    status: str
    filename: str
    purpose: str
    checks: list[dict[str, str]] = field(default_factory=list)
    reason: str | None = None
    download_url: str = ""
    bundle_url: str = ""  # the output zipped with CITATIONS.cff/.bib/.md of the data it used
    submitted: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], base: str) -> Release:
        return cls(
            id=int(data["id"]),
            state=data["state"],
            status=data["status"],
            filename=data["filename"],
            purpose=data["purpose"],
            checks=list(data.get("checks", [])),
            reason=data.get("reason"),
            download_url=f"{base}api/releases/{data['id']}/download",
            bundle_url=f"{base}api/releases/{data['id']}/bundle",
            submitted=data.get("submitted"),
        )

    def __str__(self) -> str:
        lines = [
            f"release {self.id} ({self.filename}): {self.state}; automatic checks: {self.status}"
        ]
        lines.extend(
            f"  [{c['status']}] {c['rule']}: {c['summary']}"
            for c in self.checks
            if c["status"] != "pass"
        )
        if self.status == "fail":
            lines.append("  a steward can approve it only with a written override reason")
        if self.reason:
            lines.append(f"  steward: {self.reason}")
        return "\n".join(lines)


def _endpoint() -> tuple[str, str]:
    url = os.environ.get(AIRLOCK_ENV, "")
    token = os.environ.get(TOKEN_ENV, "")
    if not url or not token:
        raise ServiceError(
            "no airlock here: insitu.release works in a notebook server of the site's hub "
            f"(which sets {AIRLOCK_ENV} and {TOKEN_ENV}); on the node use `insitu airlock`"
        )
    return (url if url.endswith("/") else url + "/"), token


def _call(method: str, path: str, **kwargs: Any) -> Any:
    import requests

    from insitu.http import raise_for_response

    base, token = _endpoint()
    try:
        answer = requests.request(
            method,
            base + path,
            headers={"Authorization": f"token {token}"},
            timeout=300,
            **kwargs,
        )
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        sent = len(kwargs.get("json", {}).get("content", ""))
        if sent > 2**20:
            raise ServiceError(
                f"the airlock closed the connection during an upload of {sent} bytes: the output "
                "is most likely far over the site's release limit; release a summary instead"
            ) from None
        raise ServiceError(
            f"the airlock did not answer ({type(exc).__name__}): try again"
        ) from None
    except requests.RequestException as exc:
        raise ServiceError(
            f"the airlock did not answer ({type(exc).__name__}): try again"
        ) from None
    raise_for_response(answer, service="the airlock")
    return answer.json()


def default_filename(purpose: str, suffix: str, fallback: str) -> str:
    """A file name from the purpose ("Noise by dose arm" -> noise-by-dose-arm.csv), so that
    a researcher's releases are told apart without naming each one."""
    import re

    words = re.findall(r"[a-z0-9]+", purpose.lower())
    stem = ""
    for word in words:
        if len(stem) + len(word) + 1 > 40:
            break
        stem = f"{stem}-{word}" if stem else word
    return f"{stem or fallback}{suffix}"


def _payload(
    obj: Any, filename: str | None, purpose: str = ""
) -> tuple[bytes, str, dict[str, Any] | None]:
    """The bytes, file name and (for insitu.kernels.sdc tables) ACRO evidence of ``obj``."""
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, str | os.PathLike):
        path = Path(obj)
        if not path.is_file():
            raise InvalidRequestError(f"{path} is not a file: nothing to release")
        return path.read_bytes(), filename or path.name, None
    if kind.startswith("pandas.") and hasattr(obj, "to_csv"):
        import pandas as pd

        frame = obj.to_frame() if isinstance(obj, pd.Series) else obj
        from insitu.kernels.sdc import EVIDENCE_ATTR

        evidence = frame.attrs.get(EVIDENCE_ATTR)
        keep_index = not isinstance(frame.index, pd.RangeIndex)
        data = (frame.reset_index() if keep_index else frame).to_csv(index=False).encode()
        return data, filename or default_filename(purpose, ".csv", "table"), evidence
    figure = getattr(obj, "figure", None) if kind.startswith("matplotlib.axes") else obj
    if figure is not None and type(figure).__module__.startswith("matplotlib.figure"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")  # at the figure's own size and dpi
        return buffer.getvalue(), filename or default_filename(purpose, ".png", "figure"), None
    if isinstance(obj, dict) and obj.get("nbformat"):
        import json

        return json.dumps(obj).encode(), filename or "notebook.ipynb", None
    if kind.startswith(("numpy.", "xarray.", "dask.", "torch.")):
        raise UnsupportedOutputError(
            f"a raw {type(obj).__name__} cannot be released: arrays can hold images pixel for "
            "pixel. Release a table of statistics, a figure, or model weights saved to a "
            ".pt/.safetensors/.npz file (checked for image-shaped arrays)"
        )
    raise UnsupportedOutputError(
        f"cannot release a {type(obj).__name__}; the airlock takes {SUPPORTED}"
    )


def release(obj_or_path: Any, purpose: str, *, filename: str | None = None) -> Release:
    """Submit a result to the airlock; the automatic checks' results come back at once.

    ``purpose`` says what the output is for (the steward reads it). A failed
    check does not stop the submission: a steward may still approve it with a
    written override reason.
    """
    if not isinstance(purpose, str) or not purpose.strip():
        raise InvalidRequestError("say what the output is for: release(obj, purpose='...')")
    data, name, evidence = _payload(obj_or_path, filename, purpose)
    body: dict[str, Any] = {
        "filename": name,
        "purpose": purpose,
        "content": base64.b64encode(data).decode(),
    }
    if evidence is not None:
        body["evidence"] = evidence
    answer = _call("POST", "api/releases", json=body)
    return Release.from_json(answer, _public_base())


def releases() -> list[Release]:
    """My release requests and their states."""
    base = _public_base()
    return [Release.from_json(r, base) for r in _call("GET", "api/releases")]


def _public_base() -> str:
    url = os.environ.get(PUBLIC_ENV) or _endpoint()[0]
    return url if url.endswith("/") else url + "/"
