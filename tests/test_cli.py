"""The ``insitu`` command: --help everywhere, fast start, clear errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from insitu.cli import build_parser, main


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    paths.append([*prefix, name])
                    walk(child, [*prefix, name])

    walk(build_parser(), [])
    return paths


def test_every_subcommand_has_help(capsys):
    paths = _all_command_paths()
    assert ["init"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0, path
        out = capsys.readouterr().out
        assert "usage: insitu" in out, path


def test_help_starts_without_heavy_imports():
    code = (
        "import sys; from insitu.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('xarray', 'zarr', 'dask', 'torch', 'flwr', 'jupyterhub', "
        "'pandas', 'pydicom') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"insitu --help imports heavy libraries: {out}"


def test_init_and_errors_name_the_problem(tmp_path, capsys):
    assert main(["--home", str(tmp_path / "h"), "init", "--site", "site-x"]) == 0
    assert "site 'site-x' initialised" in capsys.readouterr().out
    assert main(["--home", str(tmp_path / "h"), "init"]) == 0
    assert "already initialised" in capsys.readouterr().out
    code = main(["--home", str(tmp_path / "other"), "init", "--site", "Bad Name"])
    assert code == 78
    assert "site.name 'Bad Name' must be lower-case" in capsys.readouterr().err
