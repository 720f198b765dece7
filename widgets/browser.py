"""Dataset browser: the site's datasets, my access to each, and a request form in place.

from insitu.widgets import DatasetBrowser
DatasetBrowser()          # inside a hosted notebook: uses insitu.catalog()
"""

from __future__ import annotations

import html
from typing import Any

from insitu.widgets.sources import BrowserSource, ClientSource

__all__ = ["DatasetBrowser"]

_BADGE = {
    "approved": ("#1a7f37", "approved"),
    "pending": ("#9a6700", "pending"),
    "expired": ("#cf222e", "expired"),
    "revoked": ("#cf222e", "revoked"),
    "denied": ("#cf222e", "denied"),
    "none": ("#57606a", "no access"),
    "node": ("#0969da", "on the node"),
}
REQUESTABLE = ("none", "denied", "expired", "revoked")
MAX_DAYS = 3 * 365


def _badge(state: str) -> str:
    colour, label = _BADGE.get(state, _BADGE["none"])
    return (
        f'<span style="background:{colour};color:white;border-radius:4px;'
        f'padding:1px 6px;font-size:90%">{label}</span>'
    )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


class DatasetBrowser:
    """An ipywidgets browser of the site's datasets; display it by leaving it last in a cell."""

    def __init__(self, source: BrowserSource | None = None, *, title: str = "Datasets") -> None:
        import ipywidgets as w

        self.source: BrowserSource = source or ClientSource()
        self.rows: list[dict[str, Any]] = []
        self.table = w.HTML()
        self.select = w.Dropdown(description="Dataset", options=[], layout={"width": "420px"})
        self.details = w.HTML()
        self.purpose = w.Textarea(
            description="Purpose",
            placeholder="What you will do with the data, and why it needs these images",
            layout={"width": "520px", "height": "80px"},
        )
        self.project = w.Text(description="Project", placeholder="project or grant name")
        self.days = w.BoundedIntText(value=90, min=1, max=MAX_DAYS, description="Days")
        self.submit = w.Button(description="Request access", button_style="primary", icon="key")
        self.message = w.HTML()
        self.form = w.VBox([self.purpose, self.project, self.days, self.submit])
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.widget = w.VBox(
            [
                w.HBox([w.HTML(f"<h3 style='margin:4px 0'>{_e(title)}</h3>"), self.refresh_button]),
                self.table,
                self.select,
                self.details,
                self.form,
                self.message,
            ]
        )
        self.select.observe(lambda _c: self._show_selected(), names="value")
        self.submit.on_click(lambda _b: self.request())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- data ------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the catalog and my access (after a steward decided, say)."""
        from insitu.errors import InsituError

        try:
            self.rows = self.source.datasets()
        except InsituError as exc:
            self.rows = []
            self.message.value = f"<span style='color:#cf222e'>{_e(exc)}</span>"
        current = self.select.value
        names = [r["name"] for r in self.rows]
        self.select.options = [
            (f"{r['name']} — {r['title']}" if r["title"] else r["name"], r["name"])
            for r in self.rows
        ]
        if names:
            self.select.value = current if current in names else names[0]
        self.table.value = self._table_html()
        self._show_selected()

    def row(self, name: str | None = None) -> dict[str, Any] | None:
        name = name or self.select.value
        return next((r for r in self.rows if r["name"] == name), None)

    # -- drawing ---------------------------------------------------------------

    def _table_html(self) -> str:
        if not self.rows:
            return "<p>No datasets are published at this site yet.</p>"
        head = "".join(
            f"<th style='text-align:left;padding:2px 10px'>{h}</th>"
            for h in ("dataset", "title", "version", "subjects", "series", "my access")
        )
        body = "".join(
            "<tr>"
            + "".join(
                f"<td style='padding:2px 10px'>{cell}</td>"
                for cell in (
                    f"<code>{_e(r['name'])}</code>",
                    _e(r["title"]),
                    _e(r["version"]),
                    _e(r["subjects"] if r["subjects"] is not None else "—"),
                    _e(r["series"] if r["series"] is not None else "—"),
                    _badge(r["access"]),
                )
            )
            + "</tr>"
            for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _show_selected(self) -> None:
        row = self.row()
        if row is None:
            self.details.value = ""
            self.form.layout.display = "none"
            return
        parts = [f"<h4 style='margin:6px 0'>{_e(row['title'] or row['name'])}</h4>"]
        if row["description"]:
            parts.append(f"<p>{_e(row['description'])}</p>")
        counts = ", ".join(f"{row[k]} {k}" for k in ("subjects", "series") if row[k] is not None)
        parts.append(
            f"<p><code>{_e(row['name'])}</code> {_e(row['version'])}"
            + (f" · {_e(counts)}" if counts else "")
            + f" · my access: {_badge(row['access'])}"
            + (
                f" until {_e(row['expires'])}"
                if row["expires"] and row["access"] == "approved"
                else ""
            )
            + "</p>"
        )
        if row["citation"]:
            parts.append(f"<p><b>Cite as:</b> {_e(row['citation'])}</p>")
        if row["access"] in ("approved", "node"):
            parts.append(
                "<p>Open it in this notebook:</p>"
                f"<pre>ds = insitu.open_dataset({row['name']!r})</pre>"
            )
        elif row["access"] == "pending":
            parts.append("<p>Your request is waiting for the site's data steward.</p>")
        elif row["access"] in ("denied", "expired", "revoked"):
            parts.append(f"<p>Your access was {row['access']}; you may ask again below.</p>")
        self.details.value = "".join(parts)
        self.form.layout.display = "flex" if row["access"] in REQUESTABLE else "none"

    # -- actions -----------------------------------------------------------------

    def request(self) -> Any:
        """Send the form's request for the selected dataset; returns the source's answer."""
        from insitu.errors import InsituError

        row = self.row()
        if row is None:
            return None
        purpose, project = self.purpose.value.strip(), self.project.value.strip()
        missing = [n for n, v in (("purpose", purpose), ("project", project)) if not v]
        if missing:
            self.message.value = (
                f"<span style='color:#cf222e'>Please give a {' and a '.join(missing)}: the "
                "steward decides on them and the public register shows them.</span>"
            )
            return None
        self.submit.disabled = True
        try:
            answer = self.source.request_access(
                row["name"], purpose=purpose, project=project, days=int(self.days.value)
            )
        except InsituError as exc:
            self.message.value = f"<span style='color:#cf222e'>{_e(exc)}</span>"
            return None
        finally:
            self.submit.disabled = False
        self.message.value = (
            f"<span style='color:#1a7f37'>Request for <code>{_e(row['name'])}</code> sent: "
            "the site's steward will decide; this page shows the answer after Refresh.</span>"
        )
        self.purpose.value = ""
        self.refresh()
        return answer
