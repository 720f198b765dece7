"""The site kernel's preload: what a first read imports is loaded at kernel start,
and a package that fails to import does not stop the kernel from starting."""

from __future__ import annotations

import sys

import pytest

from insitu.kernels import preload


def test_preload_imports_the_reading_stack() -> None:
    assert preload.preload() == []
    assert all(name in sys.modules for name in preload.MODULES)


def test_a_module_that_fails_to_import_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(preload, "MODULES", ("numpy", "insitu_no_such_module"))
    assert preload.preload() == ["insitu_no_such_module"]
