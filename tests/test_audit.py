"""The audit log: hash chain, tamper detection, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from insitu.audit import AuditLog
from insitu.errors import AuditChainError

# The fields a "read" entry requires (insitu.audit_events).
READ = {"version": "v1", "via": "gate", "requests": 1}


def test_chain_verifies_and_query_filters(home):
    log = AuditLog(home)
    log.append("access.request", user="ada", dataset="trial", request=1, purpose="noise")
    log.append("access.approve", user="steward", dataset="trial", request=1, for_user="ada")
    log.append("read", user="ada", dataset="trial", series="s1", bytes=10, **READ)
    report = log.verify()
    assert report.entries == 3
    assert [e["kind"] for e in log.query(kind="access")] == ["access.request", "access.approve"]
    assert len(log.query(user="ada")) == 2
    assert log.query(since=datetime.now(UTC) + timedelta(minutes=1)) == []


def _lines(log):
    return log.path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("tamper", ["edit", "drop", "swap", "garbage"])
def test_tampering_names_the_first_bad_entry(home, tmp_path, tamper):
    log = AuditLog(home)
    for i in range(5):
        log.append("read", user="ada", dataset="trial", bytes=i, **READ)
    lines = _lines(log)
    if tamper == "edit":
        entry = json.loads(lines[2])
        entry["details"]["bytes"] = 999
        lines[2] = json.dumps(entry) + "\n"
    elif tamper == "drop":
        del lines[2]
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[2] = "not json\n"
    copy = tmp_path / "tampered.jsonl"
    shutil.copy(log.path, tmp_path / "orig.jsonl")
    copy.write_text("".join(lines))
    with pytest.raises(AuditChainError, match=r"entry (1|2) "):
        log.verify(copy)
    assert log.verify().entries == 5


def _writer(root: str, worker: int, count: int) -> None:
    from insitu.config import NodeHome

    log = AuditLog(NodeHome(__import__("pathlib").Path(root)))
    for i in range(count):
        log.append("read", user=f"w{worker}", dataset="trial", i=i, **READ)


def test_concurrent_writers_never_interleave_or_lose(home):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home.root), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(home)
    assert log.verify().entries == 160
    for w in range(4):
        assert sorted(e["details"]["i"] for e in log.query(user=f"w{w}")) == list(range(40))
