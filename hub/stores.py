"""Where the gate finds a dataset's store, and the one check every key passes.

The catalog (``insitu.datasets.catalog``) is the authority on what is
published; this module turns (dataset, version) into a store folder and a
zarr key into a file inside that folder, refusing anything that could escape
it: ``..`` segments, absolute paths, backslashes, percent signs (no zarr key
has one, so double-encoded tricks cannot survive), control characters and
symbolic links that resolve outside the store.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from insitu.config import NodeHome
from insitu.errors import DatasetNotFoundError, InvalidRequestError

__all__ = [
    "LATEST",
    "key_file",
    "key_path",
    "list_versions",
    "resolve",
    "retired_versions",
    "safe_key",
]

LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.=+-]{1,255}$")


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name or "") or ".." in name:
        raise InvalidRequestError(f"{kind} name {name!r} is not valid")
    return name


def list_versions(home: NodeHome, dataset: str) -> list[str]:
    """The readable versions of a dataset; DatasetNotFoundError naming what exists,
    VersionRetiredError when every version was retired."""
    from insitu.datasets.catalog import Catalog

    _check_name("dataset", dataset)
    with Catalog(home) as catalog:
        catalog.readable(dataset)  # raises, naming the datasets that exist or the retirement
        return [
            v["version"]
            for v in catalog.versions(dataset)
            if catalog.retirement(dataset, v["version"]) is None
        ]


def retired_versions(home: NodeHome, dataset: str) -> list[str]:
    """The retired versions of a dataset (still cited, no longer read)."""
    from insitu.datasets.catalog import Catalog

    _check_name("dataset", dataset)
    with Catalog(home) as catalog:
        return [
            v["version"]
            for v in catalog.versions(dataset)
            if catalog.retirement(dataset, v["version"]) is not None
        ]


def resolve(home: NodeHome, dataset: str, version: str | None = None) -> tuple[str, Path]:
    """(concrete version, store folder); ``None`` or ``"latest"`` mean the newest one not
    retired; a retired version raises VersionRetiredError (when, why)."""
    from insitu.datasets.catalog import Catalog

    _check_name("dataset", dataset)
    if version == LATEST:
        version = None
    if version is not None:
        _check_name("version", version)
    with Catalog(home) as catalog:
        row = catalog.readable(dataset, version)
        path = catalog.store_path(dataset, row["version"])
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"dataset {dataset!r} version {row['version']} is in the catalog but its store "
            "is missing: an admin should run `insitu verify`"
        )
    return row["version"], path


def safe_key(key: str) -> str:
    """A zarr key made only of plain, relative segments; InvalidRequestError otherwise."""
    if not key or key.startswith("/") or len(key) > 1024:
        raise InvalidRequestError("a store key must be a relative path such as 'zarr.json'")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise InvalidRequestError(f"store key segment {segment[:40]!r} is not allowed")
    return key


def key_path(root: Path, key: str) -> Path:
    """The file for ``key`` inside store ``root``, after resolving every symlink.

    Raises InvalidRequestError for a malformed key and DatasetNotFoundError
    when the key does not exist *inside* the store (a symlink that leads out
    counts as missing, so probing reveals nothing).
    """
    return _confined(os.path.realpath(root), key)


def _confined(real_root: str, key: str) -> Path:
    safe_key(key)
    real = os.path.realpath(Path(real_root) / key)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise DatasetNotFoundError(f"no key {key!r} in this store")
    return Path(real)


def key_file(real_root: str, key: str) -> tuple[str, int] | None:
    """(path, size) of the regular file ``key`` names inside the store whose root
    ``real_root`` is already resolved (``os.path.realpath``); None when it names none:
    absent, a folder, or a symlink that leads out. InvalidRequestError for a malformed key.

    The same answer as :func:`key_path`, for the price of one ``lstat`` per key
    segment: the root holds no symlink, and safe segments cannot climb out, so
    only a segment that is itself a symlink needs the full resolution.
    """
    safe_key(key)
    path = real_root
    for segment in key.split("/"):
        path = f"{path}/{segment}"
        try:
            found = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(found.st_mode):
            return _resolved_file(real_root, key)
    return (path, found.st_size) if stat.S_ISREG(found.st_mode) else None


def _resolved_file(real_root: str, key: str) -> tuple[str, int] | None:
    try:
        real = _confined(real_root, key)
        found = real.stat()
    except (DatasetNotFoundError, OSError):
        return None
    return (str(real), found.st_size) if stat.S_ISREG(found.st_mode) else None
