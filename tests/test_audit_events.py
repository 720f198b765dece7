"""Audit event kinds: declared in insitu.audit_events, used by every writer, versioned.

The code is read (every ``AuditLog.append``, ``RunInfo.audit`` and ``_audit``
call): a kind that is not declared, or a call that leaves out a field its kind
requires, fails here before it can fail at a site. Old chains (entries without
a schema version) still verify.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from insitu.audit import GENESIS, AuditLog, _canonical, _digest
from insitu.audit_events import EVENTS, SCHEMA_VERSION, check_event
from insitu.errors import AuditChainError

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("insitu", "datasets", "hub", "kernels", "federation", "widgets")
# Fields a wrapper adds to every entry it writes (RunInfo.audit in federation/site_mod.py).
WRAPPER_FIELDS = {"audit": {"app", "site", "fingerprint", "run_id"}}


def _audit_calls() -> list[tuple[str, ast.Call, ast.expr]]:
    """(where, call, kind argument) of every call that writes an audit entry."""
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            source = path.read_text()
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "append" and isinstance(func, ast.Attribute):
                    receiver = ast.get_source_segment(source, func.value) or ""
                    if not re.search(r"audit", receiver, re.IGNORECASE):
                        continue
                    kind = node.args[0]
                elif name == "audit" and isinstance(func, ast.Attribute):
                    kind = node.args[0]
                elif name == "_audit":  # module helpers: _audit(home, kind, ...)
                    if len(node.args) < 2:
                        continue
                    kind = node.args[1]
                else:
                    continue
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", node, kind))
    return found


def _kind_assignments() -> set[str]:
    """Dotted names assigned to ``kind`` in modules that write the audit log."""
    kinds = set()
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            source = path.read_text()
            if "AuditLog" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "kind" for t in node.targets
                ):
                    kinds |= {
                        c.value
                        for c in ast.walk(node.value)
                        if isinstance(c, ast.Constant)
                        and isinstance(c.value, str)
                        and re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", c.value)
                    }
    return kinds


def test_every_writer_uses_a_declared_kind_with_its_required_fields():
    calls = _audit_calls()
    assert len(calls) >= 40, "the scan no longer finds the audit writers: fix the test"
    problems = []
    for where, call, kind in calls:
        if isinstance(kind, ast.Name):
            continue  # a kind passed through (a wrapper's parameter, or `kind` chosen below)
        if not (isinstance(kind, ast.Constant) and isinstance(kind.value, str)):
            problems.append(f"{where}: the kind is not a string literal")
            continue
        if kind.value not in EVENTS:
            problems.append(f"{where}: kind {kind.value!r} is not declared")
            continue
        keywords = {k.arg for k in call.keywords}
        if None in keywords:
            continue  # **details: checked when the entry is written
        name = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        given = keywords | WRAPPER_FIELDS.get(name, set())
        missing = set(EVENTS[kind.value].required) - given
        if missing:
            problems.append(f"{where}: {kind.value!r} without {sorted(missing)}")
    assert not problems, "audit writers that break insitu/audit_events.py:\n" + "\n".join(problems)


def test_kinds_chosen_in_code_are_declared():
    chosen = _kind_assignments()
    assert chosen, "the scan no longer finds `kind = ...` assignments: fix the test"
    assert not chosen - set(EVENTS), f"undeclared kinds: {sorted(chosen - set(EVENTS))}"


def test_append_refuses_an_undeclared_kind_or_a_missing_field(home):
    log = AuditLog(home)
    with pytest.raises(ValueError, match="not declared"):
        log.append("read.everything", user="ada")
    with pytest.raises(ValueError, match="needs the detail field"):
        log.append("access.approve", user="sam", dataset="trial", request=1)
    with pytest.raises(ValueError, match="needs the detail field"):
        check_event("release.deny", {"request": 1})
    assert not log.path.exists() or log.verify().entries == 0  # nothing was written


def test_entries_carry_the_schema_version(home):
    log = AuditLog(home)
    entry = log.append("login", user="ada", outcome="ok", method="password")
    assert entry["schema"] == SCHEMA_VERSION
    assert json.loads(log.path.read_text())["schema"] == SCHEMA_VERSION


def test_an_old_chain_still_verifies_and_grows(home):
    """Entries written before the schema (no "schema" field, kinds undeclared then)."""
    log = AuditLog(home)
    log.folder.mkdir(parents=True, exist_ok=True)
    prev, lines = GENESIS, []
    for seq, kind in enumerate(("config", "read", "some.retired.kind")):
        entry = {
            "seq": seq,
            "time": "2026-11-01T10:00:00.000000+00:00",
            "kind": kind,
            "user": "ada",
            "dataset": None,
            "details": {"bytes": seq},
            "prev": prev,
        }
        entry["hash"] = prev = _digest(entry)
        lines.append(_canonical(entry) + b"\n")
    log.path.write_bytes(b"".join(lines))
    assert log.verify().entries == 3
    log.append("config", user="ada", action="test")
    assert log.verify().entries == 4
    assert [e.get("schema") for e in log.entries()] == [None, None, None, SCHEMA_VERSION]
    # the old entries are still protected: editing one breaks the chain
    old = json.loads(lines[1])
    old["details"]["bytes"] = 99
    tampered = home.root / "tampered.jsonl"
    tampered.write_bytes(lines[0] + _canonical(old) + b"\n" + lines[2])
    with pytest.raises(AuditChainError, match="entry 1 "):
        log.verify(tampered)
