"""Airlock panel: my release requests, their checks and state; download approved ones.

A download is handed to the browser as a link carrying the approved bytes
(the enclave's server has no file-download route), and the airlock records
it; anything not approved cannot be fetched.

    from insitu.widgets import AirlockPanel
    AirlockPanel(source)
"""

from __future__ import annotations

import base64
import html
import mimetypes
from typing import Any

from insitu.widgets.sources import AirlockSource

__all__ = ["AirlockPanel"]

_STATE_COLOURS = {
    "submitted": "#9a6700",
    "approved": "#1a7f37",
    "released": "#1a7f37",
    "denied": "#cf222e",
    "draft": "#57606a",
}
DOWNLOADABLE = ("approved", "released")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _download_link(url: str, filename: str, bundle_url: str = "") -> str:
    """A link that looks like a button and saves the file (one click); with ``bundle_url``,
    a second link to the same output zipped with the citations of its data."""
    link = (
        f"<a href='{_e(url)}' download='{_e(filename)}' target='_blank' rel='noopener' "
        "style='display:inline-block;background:#1a7f37;color:white;border-radius:4px;"
        f"padding:4px 12px;text-decoration:none'>&#x2B07; Download {_e(filename)}</a>"
    )
    if bundle_url:
        link += (
            f" · <a href='{_e(bundle_url)}' target='_blank' rel='noopener'>with citations (zip)</a>"
        )
    return link


def _state(state: str) -> str:
    return f"<b style='color:{_STATE_COLOURS.get(state, '#57606a')}'>{_e(state)}</b>"


class AirlockPanel:
    """My releases; display it by leaving it last in a cell."""

    def __init__(self, source: AirlockSource) -> None:
        import ipywidgets as w

        self.source = source
        self.rows: list[dict[str, Any]] = []
        self.table = w.HTML()
        self.select = w.Dropdown(description="Release", options=[], layout={"width": "480px"})
        self.details = w.HTML()
        self.download = w.Button(description="Download", icon="download", button_style="success")
        self.link = w.HTML()
        self.message = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.widget = w.VBox(
            [
                w.HBox([w.HTML("<h3 style='margin:4px 0'>My releases</h3>"), self.refresh_button]),
                self.table,
                self.select,
                self.details,
                w.HBox([self.download, self.link]),
                self.message,
            ]
        )
        self.select.observe(lambda _c: self._show(), names="value")
        self.download.on_click(lambda _b: self.fetch())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def refresh(self) -> None:
        from insitu.errors import InsituError

        try:
            self.rows = self.source.my_releases()
        except InsituError as exc:
            self.rows = []
            self.message.value = f"<span style='color:#cf222e'>{_e(exc)}</span>"
        current = self.select.value
        ids = [r["id"] for r in self.rows]
        self.select.options = [
            (f"#{r['id']} {r['filename']} ({r['state']})", r["id"]) for r in self.rows
        ]
        if ids:
            self.select.value = current if current in ids else ids[-1]
        self.table.value = self._table()
        self._show()

    def row(self) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["id"] == self.select.value), None)

    def _table(self) -> str:
        if not self.rows:
            return (
                "<p>No release requests yet: <code>insitu.release(obj, purpose=...)</code> "
                "submits one.</p>"
            )
        rows = "".join(
            f"<tr><td style='padding:1px 8px'>#{r['id']}</td>"
            f"<td style='padding:1px 8px'><code>{_e(r['filename'])}</code></td>"
            f"<td style='padding:1px 8px'>checks {_e(r.get('status'))}</td>"
            f"<td style='padding:1px 8px'>{_state(r['state'])}</td>"
            f"<td style='padding:1px 8px'>{_e(r.get('reason') or '')}</td></tr>"
            for r in self.rows
        )
        return f"<table>{rows}</table>"

    def _show(self) -> None:
        row = self.row()
        self.link.value = ""
        self.download.layout.display = None
        if row is None:
            self.details.value = ""
            self.download.disabled = True
            return
        failed = [c["rule"] for c in row.get("checks", []) if c.get("status") == "fail"]
        self.details.value = (
            f"<p><b>Purpose:</b> {_e(row.get('purpose'))}<br>"
            f"<b>Submitted:</b> {_e(row.get('submitted'))} · <b>state:</b> {_e(row['state'])}"
            + (f"<br><b>Steward's reason:</b> {_e(row['reason'])}" if row.get("reason") else "")
            + (f"<br><b>Failed checks:</b> {_e(', '.join(failed))}" if failed else "")
            + "</p>"
        )
        self.download.disabled = row["state"] not in DOWNLOADABLE
        self.download.tooltip = (
            "download the approved output"
            if row["state"] in DOWNLOADABLE
            else "only outputs a steward approved can be downloaded"
        )
        if row.get("download_url") and row["state"] in DOWNLOADABLE:
            # In a hosted notebook the hub serves it: one click on this link downloads it.
            self.download.layout.display = "none"
            self.link.value = _download_link(
                row["download_url"], row["filename"], row.get("bundle_url", "")
            )

    def fetch(self) -> bytes | None:
        """Download the selected approved output; returns its bytes and offers a link."""
        from insitu.errors import InsituError

        row = self.row()
        if row is None:
            return None
        if row.get("download_url") and row["state"] in DOWNLOADABLE:
            # In a hosted notebook the hub serves approved outputs to the browser.
            self.link.value = _download_link(
                row["download_url"], row["filename"], row.get("bundle_url", "")
            )
            return None
        try:
            filename, data = self.source.download_release(row["id"])
        except InsituError as exc:
            self.message.value = f"<span style='color:#cf222e'>{_e(exc)}</span>"
            return None
        self.message.value = ""
        self.refresh()  # the state moves to "released"
        self.select.value = row["id"]
        mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        payload = base64.b64encode(data).decode("ascii")
        self.link.value = (
            f"<a download='{_e(filename)}' href='data:{mime};base64,{payload}'>"
            f"save {_e(filename)} ({len(data)} bytes)</a>"
        )
        return data
