"""Dataset browser: real widget state against the node's real catalog and access rules."""

from __future__ import annotations

from typing import Any

from insitu.errors import AccessDeniedError
from insitu.hub import access
from insitu.widgets.browser import DatasetBrowser
from insitu.widgets.sources import NodeSource, dataset_row


def test_lists_the_sites_datasets_with_counts_and_my_access(site_node) -> None:
    browser = DatasetBrowser(NodeSource("bob", site_node))
    assert [r["name"] for r in browser.rows] == ["locat-site-a"]
    row = browser.row()
    assert row["subjects"] == 2 and row["series"] == 2 and row["access"] == "none"
    assert "locat-site-a" in browser.table.value and "no access" in browser.table.value
    assert "LOCAT-like trial (synthetic), site A" in browser.details.value
    assert "Cite as:" in browser.details.value
    assert browser.form.layout.display == "flex", "no access yet: the form is shown"


def test_request_form_files_a_real_request_and_shows_pending(site_node) -> None:
    browser = DatasetBrowser(NodeSource("bob", site_node))
    browser.purpose.value = "Compare image noise between dose arms"
    browser.project.value = "noise-study"
    browser.days.value = 30
    browser.submit.click()
    (filed,) = access.register(site_node, user="bob")
    assert (filed.dataset, filed.purpose, filed.project, filed.days) == (
        "locat-site-a",
        "Compare image noise between dose arms",
        "noise-study",
        30,
    )
    assert "sent" in browser.message.value
    assert browser.row()["access"] == "pending"
    assert browser.form.layout.display == "none"
    assert "waiting for the site's data steward" in browser.details.value
    # The steward approves; Refresh shows it with the code to open the data.
    access.approve(site_node, "sam", filed.id, "fine", days=10)
    browser.refresh_button.click()
    assert browser.row()["access"] == "approved"
    assert "insitu.open_dataset('locat-site-a')" in browser.details.value


def test_empty_purpose_is_refused_before_anything_is_sent(site_node) -> None:
    browser = DatasetBrowser(NodeSource("bob", site_node))
    browser.project.value = "p"
    browser.submit.click()
    assert "Please give a purpose" in browser.message.value
    assert access.register(site_node) == []


def test_a_refusal_is_shown_not_raised(site_node) -> None:
    browser = DatasetBrowser(NodeSource("mallory", site_node))  # not a user of this site
    browser.purpose.value, browser.project.value = "x", "y"
    assert browser.request() is None
    assert "not a user of this site" in browser.message.value
    assert access.register(site_node) == []


class Listing:
    """A hand-written source (what a client library returns, in other spellings)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def datasets(self) -> list[dict[str, Any]]:
        return [
            dataset_row(
                {
                    "dataset": "b",
                    "n_subjects": 12,
                    "access": {"state": "approved", "expires_at": "2027-01-01"},
                }
            ),
            dataset_row({"name": "a<script>", "title": "T", "status": "weird"}),
        ]

    def request_access(self, dataset: str, **kwargs: Any) -> Any:
        self.calls.append((dataset, kwargs))
        raise AccessDeniedError("the site is closed for requests")


def test_other_spellings_escaping_and_errors() -> None:
    source = Listing()
    browser = DatasetBrowser(source)
    assert browser.row("b")["expires"] == "2027-01-01"
    assert "until 2027-01-01" in browser.details.value
    assert "<script>" not in browser.table.value
    browser.select.value = "a<script>"
    assert browser.row()["access"] == "none"
    browser.purpose.value, browser.project.value = "p", "q"
    browser.submit.click()
    assert source.calls == [("a<script>", {"purpose": "p", "project": "q", "days": 90})]
    assert "closed for requests" in browser.message.value
    assert not browser.submit.disabled
