"""Re-check a published store against the sha256 of every file in the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from insitu.config import NodeHome, resolve_home
from insitu.datasets.catalog import Catalog
from insitu.datasets.store_write import checksum_tree

__all__ = ["VerifyResult", "verify"]


@dataclass
class VerifyResult:
    dataset: str
    version: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "checked": self.checked,
            "ok": self.ok,
            "problems": self.problems,
        }


def verify(
    name: str, version: str | None = None, *, home: NodeHome | None = None
) -> list[VerifyResult]:
    """Check one version, or every version of ``name`` when ``version`` is None."""
    node = (home or resolve_home()).require_initialized()
    with Catalog(node) as catalog:
        rows = [catalog.version(name, version)] if version else catalog.versions(name)
        if not rows:
            catalog.version(name)  # raises DatasetNotFoundError listing what exists
        results = []
        for row in rows:
            expected = catalog.checksums(name, row["version"])
            path = catalog.store_path(name, row["version"])
            result = VerifyResult(name, row["version"])
            retired = catalog.retirement(name, row["version"])
            if retired and retired["data_deleted_at"] and not path.is_dir():
                results.append(result)  # retired, store deleted on purpose: nothing to check
                continue
            actual = checksum_tree(path) if path.is_dir() else {}
            if not path.is_dir():
                result.problems.append(f"the store {path} is missing")
            for key, (digest, size) in sorted(expected.items()):
                got = actual.get(key)
                if got is None:
                    result.problems.append(f"missing: {key}")
                elif got != (digest, size):
                    result.problems.append(f"changed: {key} (sha256 {got[0][:12]}…)")
            result.problems.extend(
                f"unexpected file: {k}" for k in sorted(set(actual) - set(expected))
            )
            result.checked = len(actual)
            results.append(result)
    return results
