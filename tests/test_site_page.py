"""The site's landing page (insitu.hub.site_service.page): what a researcher and a steward
see after login, everything escaped, and nothing of a steward's work for a researcher."""

from __future__ import annotations

from insitu.hub import access
from insitu.hub.airlock import Airlock
from insitu.hub.site_service import page


def test_a_researcher_sees_datasets_requests_and_releases(hub_home) -> None:
    access.request(hub_home, "bob", "trial-a", "<script>alert(1)</script>", "p", 30)
    with Airlock(hub_home) as airlock:
        airlock.submit("ada", b"a,b\n1,2\n", "counts.csv", purpose="counts")
    shown = page(hub_home, "bob")
    assert "An insitu site node" in shown and "Welcome, bob" in shown
    assert "trial-a" in shown and "no access" not in shown  # bob's request is pending
    assert "pending" in shown and "<script>alert" not in shown and "&lt;script&gt;" in shown
    assert "Nothing submitted yet" in shown, "ada's release is not bob's"
    assert "Waiting for a steward" not in shown
    # Into JupyterLab through the hub's spawn page (the server starts if it is not running).
    assert "/hub/spawn/bob?next=%2Fuser%2Fbob%2Flab" in shown


def test_a_steward_sees_what_waits_for_them(hub_home) -> None:
    filed = access.request(hub_home, "bob", "trial-a", "noise study", "p", 30)
    with Airlock(hub_home) as airlock:
        airlock.submit("ada", b"a,b\n1,2\n", "counts.csv", purpose="counts")
    shown = page(hub_home, "sam")
    assert "Waiting for a steward (2)" in shown
    assert f"#{filed.id}" in shown and "noise study" in shown and "counts.csv" in shown
    assert "/hub/spawn/sam?next=%2Fuser%2Fsam%2Flab%2Ftree%2F06-steward-review.ipynb" in shown
    assert "no access" in shown, "sam has no approval himself"
