"""`insitu airlock list|show|approve|deny`: role checks and clear messages."""

from __future__ import annotations

import json

import pandas as pd

from insitu.cli import main
from insitu.hub.airlock import Airlock


def submit(home, user: str, counts: list[int], name: str) -> int:
    table = pd.DataFrame({"arm": ["A", "B"], "n": counts})
    with Airlock(home) as airlock:
        return airlock.submit(
            user, table.to_csv(index=False).encode(), name, purpose="per-arm counts"
        ).id


def test_a_steward_reviews_and_decides_from_the_cli(hub_home, capsys):
    good = submit(hub_home, "ada", [12, 30], "good.csv")
    bad = submit(hub_home, "ada", [3, 30], "bad.csv")

    assert main(["airlock", "list"]) == 0
    listing = capsys.readouterr().out
    assert "good.csv" in listing and "bad.csv" in listing and "fail" in listing

    assert main(["airlock", "show", str(bad), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "fail" and shown["preview"].startswith("arm,n")
    assert main(["airlock", "show", str(bad)]) == 0
    assert "[fail  ] threshold (acro)" in capsys.readouterr().out

    # Decisions need a named steward: not the operator, not a researcher.
    assert main(["airlock", "approve", str(good), "--reason", "ok"]) == 4
    assert "--as NAME" in capsys.readouterr().err
    assert main(["airlock", "approve", str(good), "--reason", "ok", "--as", "bob"]) == 4
    assert "only a steward or admin" in capsys.readouterr().err

    assert main(["airlock", "approve", str(good), "--reason", "ok", "--as", "sam"]) == 0
    assert "approved by sam" in capsys.readouterr().out
    assert main(["airlock", "approve", str(bad), "--reason", "ok", "--as", "sam"]) == 1
    assert "override" in capsys.readouterr().err
    assert main(["airlock", "deny", str(bad), "--reason", "arm A too small", "--as", "sam"]) == 0
    capsys.readouterr()

    assert main(["airlock", "list", "--state", "denied", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [bad]
    assert main(["airlock", "show", "999"]) == 4
    assert "no release request 999" in capsys.readouterr().err
