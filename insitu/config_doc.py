"""docs/reference/config.md, generated from insitu/config.py.

Each key of insitu.toml is a field of a section dataclass in
:mod:`insitu.config`; its help text is the field's ``metadata["help"]``, or else
the string literal right below it (an attribute docstring). Regenerate the page
with::

    .venv/bin/python -m insitu.config_doc > docs/reference/config.md

tests/test_config.py checks that the committed page equals the generated one
and that every key has help text.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import MISSING, fields
from typing import Any

__all__ = ["help_texts", "main", "markdown"]

COMMAND = "python -m insitu.config_doc > docs/reference/config.md"
# Sections owned by one component, read from SiteConfig.extra, documented with it.
COMPONENT_SECTIONS = {
    "pacs": "pacs.md",
    "deface": "deidentification.md",
    "federation": "federation.md",
}


def _clean(text: str) -> str:
    return " ".join(inspect.cleandoc(text).split())


def help_texts() -> dict[str, dict[str, str]]:
    """``{section class name: {key or "": help}}``, "" being the section's docstring."""
    import insitu.config

    tree = ast.parse(inspect.getsource(insitu.config))
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        texts: dict[str, str] = {}
        body = node.body
        for index, item in enumerate(body):
            if (
                index == 0
                and isinstance(item, ast.Expr)
                and isinstance(item.value, ast.Constant)
                and isinstance(item.value.value, str)
            ):
                texts[""] = _clean(item.value.value)
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            after = body[index + 1] if index + 1 < len(body) else None
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                texts[item.target.id] = _clean(after.value.value)
        found[node.name] = texts
    return found


def _help_of(field: Any, docstrings: dict[str, str]) -> str:
    text = field.metadata.get("help") or docstrings.get(field.name, "")
    return _clean(str(text)) if text else ""


def _default(field: Any) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return None


def _toml(value: Any) -> str:
    from insitu.config import _toml_value

    return _toml_value(value)


def markdown() -> str:
    """The whole reference page."""
    from insitu.config import _SECTIONS, CONFIG_NAME

    texts = help_texts()
    lines = [
        "# insitu.toml: every key",
        "",
        f"<!-- Generated from insitu/config.py; do not edit. Regenerate: {COMMAND} -->",
        "",
        f"One file per node home, `$INSITU_HOME/{CONFIG_NAME}`, read in one place "
        "(`insitu.config.load_config`). Unknown keys and wrong types are refused with an "
        "error that names the key. `insitu init` writes every key with its default.",
    ]
    for section, cls in _SECTIONS.items():
        own = texts.get(cls.__name__, {})
        lines += ["", f"## [{section}]", ""]
        if own.get(""):
            lines += [own[""], ""]
        lines += ["| key | default | meaning |", "| --- | --- | --- |"]
        for field in fields(cls):
            meaning = _help_of(field, own).replace("|", "\\|")
            lines.append(f"| `{field.name}` | `{_toml(_default(field))}` | {meaning} |")
    lines += [
        "",
        "## Sections of one component",
        "",
        "These tables are read by the component that owns them and documented there:",
        "",
    ]
    lines += [f"- `[{name}]`: [{page}](../{page})" for name, page in COMPONENT_SECTIONS.items()]
    return "\n".join(lines) + "\n"


def missing_help() -> list[str]:
    """``section.key`` of every key without help text."""
    from insitu.config import _SECTIONS

    texts = help_texts()
    return [
        f"{section}.{field.name}"
        for section, cls in _SECTIONS.items()
        for field in fields(cls)
        if not _help_of(field, texts.get(cls.__name__, {}))
    ]


def main(argv: list[str]) -> int:
    if argv:
        print(textwrap.dedent(f"usage: {COMMAND}"))
        return 2
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
