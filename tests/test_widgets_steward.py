"""Steward and airlock panels on a real node: decisions go through the hub's rules and audit."""

from __future__ import annotations

import io

import pandas as pd
from PIL import Image

from insitu.audit import AuditLog
from insitu.hub import access
from insitu.hub.airlock import Airlock
from insitu.widgets.airlock import AirlockPanel
from insitu.widgets.sources import NodeSource
from insitu.widgets.steward import StewardPanel


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "orange").save(out, format="PNG")
    return out.getvalue()


def _submit(node, **outputs: bytes) -> dict[str, int]:
    with Airlock(node) as airlock:
        return {
            name: airlock.submit("alice", data, name, purpose=f"figure for the paper: {name}").id
            for name, data in outputs.items()
        }


def test_access_requests_are_decided_with_a_reason(site_node) -> None:
    first = access.request(site_node, "bob", "locat-site-a", "noise study", "p1", 30)
    second = access.request(site_node, "alice", "locat-site-a", "appendix sizes", "p2", 60)
    panel = StewardPanel(NodeSource("sam", site_node))
    assert panel.tabs.get_title(0) == "Access (2)"
    panel.access_select.value = first.id
    assert "noise study" in panel.access_details.value and panel.access_days.value == 30
    panel.access_approve.click()
    assert "Give a reason" in panel.access_message.value
    assert access.status_for(site_node, "bob", "locat-site-a")[0] == "pending"
    panel.access_reason.value = "fits the trial's consent"
    panel.access_days.value = 10
    panel.access_approve.click()
    decided = access.get_request(site_node, first.id)
    assert decided.status == "approved" and decided.decision_reason == "fits the trial's consent"
    assert panel.tabs.get_title(0) == "Access (1)"
    panel.access_select.value = second.id
    panel.access_reason.value = "purpose too vague"
    panel.access_deny.click()
    assert access.get_request(site_node, second.id).status == "denied"
    assert "No pending access requests" in panel.access_details.value
    kinds = [e["kind"] for e in AuditLog(site_node).query(user="sam")]
    assert kinds.count("access.approve") == 1 and kinds.count("access.deny") == 1


def test_a_researcher_cannot_decide(site_node) -> None:
    request = access.request(site_node, "bob", "locat-site-a", "x", "y", 5)
    panel = StewardPanel(NodeSource("alice", site_node))
    assert "only a steward or admin" in panel.release_message.value
    panel.access_select.value = request.id
    panel.access_reason.value = "I approve myself a friend"
    panel.access_approve.click()
    assert "alice is a researcher" in panel.access_message.value
    assert access.get_request(site_node, request.id).status == "pending"


def test_releases_show_checks_and_previews_and_need_an_override(site_node) -> None:
    small = pd.DataFrame({"arm": ["low", "std"], "n": [3, 25], "noise_hu": [22.1, 11.3]})
    ids = _submit(site_node, **{"small.csv": small.to_csv(index=False).encode(), "fig.png": _png()})
    panel = StewardPanel(NodeSource("sam", site_node))
    assert panel.tabs.get_title(1) == "Releases (2)"
    panel.release_select.value = ids["small.csv"]
    assert "threshold" in panel.release_details.value and "fail" in panel.release_details.value
    assert "22.1" in panel.release_preview.value  # the CSV's text
    assert panel.release_override.layout.display == "flex"
    panel.release_reason.value = "ok"
    panel.release_approve.click()
    assert "override" in panel.release_message.value
    with Airlock(site_node) as airlock:
        assert airlock.get(ids["small.csv"]).state == "submitted"
    panel.release_select.value = ids["fig.png"]
    assert panel.release_image.layout.display == "block"
    shown = Image.open(io.BytesIO(bytes(panel.release_image.value)))  # re-rendered, downscaled
    assert shown.format == "PNG" and shown.size == (40, 30)
    panel.release_reason.value = "a summary plot"
    panel.release_approve.click()
    panel.release_select.value = ids["small.csv"]
    panel.release_reason.value = "cells under 10"
    panel.release_deny.click()
    with Airlock(site_node) as airlock:
        assert airlock.get(ids["fig.png"]).state == "approved"
        assert airlock.get(ids["small.csv"]).state == "denied"
    assert panel.release_rows == []


def test_airlock_panel_downloads_only_approved_outputs(site_node) -> None:
    ids = _submit(site_node, **{"fig.png": _png(), "notes.txt": b"summary\n"})
    with Airlock(site_node) as airlock:
        airlock.approve(ids["fig.png"], steward="sam", reason="fine")
    panel = AirlockPanel(NodeSource("alice", site_node))
    assert "fig.png" in panel.table.value and "approved" in panel.table.value
    panel.select.value = ids["notes.txt"]
    assert panel.download.disabled
    assert panel.fetch() is None
    assert "only approved outputs" in panel.message.value
    panel.select.value = ids["fig.png"]
    assert not panel.download.disabled
    assert panel.fetch() == _png()
    assert "download='fig.png'" in panel.link.value and "data:image/png;base64," in panel.link.value
    assert panel.row()["state"] == "released"
    # Another researcher sees none of alice's releases.
    assert AirlockPanel(NodeSource("bob", site_node)).rows == []
