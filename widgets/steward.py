"""Steward panel: pending access and release requests, with checks and previews.

Every decision needs a reason (the researcher and the register see it); a
release whose automatic checks failed can only be approved with a written
override. The panel only calls the source; the rules (roles, states, audit)
live in the hub's plain functions behind it.

    from insitu.widgets import StewardPanel
    from insitu.widgets.sources import NodeSource
    StewardPanel(NodeSource("sam"))
"""

from __future__ import annotations

import html
from typing import Any

from insitu.widgets.sources import StewardSource

__all__ = ["StewardPanel"]

_CHECK_COLOURS = {"pass": "#1a7f37", "review": "#9a6700", "fail": "#cf222e"}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _status(status: str) -> str:
    colour = _CHECK_COLOURS.get(status, "#57606a")
    return f"<b style='color:{colour}'>{_e(status)}</b>"


class StewardPanel:
    """Two tabs, access requests and releases; display it by leaving it last in a cell."""

    def __init__(self, source: StewardSource) -> None:
        import ipywidgets as w

        self.source = source
        self.access_rows: list[dict[str, Any]] = []
        self.release_rows: list[dict[str, Any]] = []
        self.preview_image = b""
        # access requests
        self.access_select = w.Select(options=[], rows=6, layout={"width": "560px"})
        self.access_details = w.HTML()
        self.access_reason = w.Text(description="Reason", layout={"width": "560px"})
        self.access_days = w.BoundedIntText(value=90, min=1, max=3 * 365, description="Days")
        self.access_approve = w.Button(description="Approve", button_style="success")
        self.access_deny = w.Button(description="Deny", button_style="danger")
        self.access_message = w.HTML()
        access_tab = w.VBox(
            [
                self.access_select,
                self.access_details,
                self.access_reason,
                w.HBox([self.access_days, self.access_approve, self.access_deny]),
                self.access_message,
            ]
        )
        # releases
        self.release_select = w.Select(options=[], rows=6, layout={"width": "560px"})
        self.release_details = w.HTML()
        self.release_preview = w.HTML()
        self.release_image = w.Image(format="png", layout={"max_width": "480px"})
        self.release_reason = w.Text(description="Reason", layout={"width": "560px"})
        self.release_override = w.Text(
            description="Override",
            placeholder="why this output is safe although a check failed",
            layout={"width": "560px"},
        )
        self.release_approve = w.Button(description="Approve", button_style="success")
        self.release_deny = w.Button(description="Deny", button_style="danger")
        self.release_message = w.HTML()
        release_tab = w.VBox(
            [
                self.release_select,
                self.release_details,
                self.release_preview,
                self.release_image,
                self.release_reason,
                self.release_override,
                w.HBox([self.release_approve, self.release_deny]),
                self.release_message,
            ]
        )
        self.tabs = w.Tab(children=[access_tab, release_tab])
        self.tabs.set_title(0, "Access")
        self.tabs.set_title(1, "Releases")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.widget = w.VBox(
            [w.HBox([w.HTML("<h3 style='margin:4px 0'>Steward</h3>"), self.refresh_button]),
             self.tabs]
        )  # fmt: skip
        self.access_select.observe(lambda _c: self._show_access(), names="value")
        self.release_select.observe(lambda _c: self._show_release(), names="value")
        self.access_approve.on_click(lambda _b: self.decide_access(approve=True))
        self.access_deny.on_click(lambda _b: self.decide_access(approve=False))
        self.release_approve.on_click(lambda _b: self.decide_release(approve=True))
        self.release_deny.on_click(lambda _b: self.decide_release(approve=False))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- loading ---------------------------------------------------------------

    def refresh(self) -> None:
        from insitu.errors import InsituError

        try:
            self.access_rows = self.source.pending_access()
        except InsituError as exc:
            self.access_rows = []
            self.access_message.value = _error(exc)
        try:
            self.release_rows = self.source.pending_releases()
        except InsituError as exc:
            self.release_rows = []
            self.release_message.value = _error(exc)
        self.access_select.options = [
            (f"#{r['id']} {r['user']} → {r['dataset']} ({r['days']} days)", r["id"])
            for r in self.access_rows
        ]
        self.release_select.options = [
            (f"#{r['id']} {r['user']}: {r['filename']} [{r['status']}]", r["id"])
            for r in self.release_rows
        ]
        # The first waiting request is selected, so what is listed is what is shown and its
        # buttons work at once. Short titles: JupyterLab's tabs cut long ones.
        _keep_or_first(self.access_select)
        _keep_or_first(self.release_select)
        self.tabs.set_title(0, f"Access ({len(self.access_rows)})")
        self.tabs.set_title(1, f"Releases ({len(self.release_rows)})")
        self._show_access()
        self._show_release()

    def _selected(self, rows: list[dict[str, Any]], value: Any) -> dict[str, Any] | None:
        return next((r for r in rows if r["id"] == value), None)

    # -- access ----------------------------------------------------------------

    def _show_access(self) -> None:
        row = self._selected(self.access_rows, self.access_select.value)
        for button in (self.access_approve, self.access_deny):
            button.disabled = row is None
        if row is None:
            self.access_details.value = "<p><i>No pending access requests.</i></p>"
            return
        self.access_days.value = int(row.get("days") or 90)
        self.access_details.value = (
            f"<p><b>{_e(row['user'])}</b> asks for <code>{_e(row['dataset'])}</code> for "
            f"{_e(row['days'])} days (asked {_e(row.get('requested_at'))})</p>"
            f"<p><b>Purpose:</b> {_e(row['purpose'])}<br><b>Project:</b> {_e(row['project'])}</p>"
        )

    def decide_access(self, *, approve: bool) -> Any:
        from insitu.errors import InsituError

        row = self._selected(self.access_rows, self.access_select.value)
        if row is None:
            return None
        reason = self.access_reason.value.strip()
        if not reason:
            self.access_message.value = _error(
                "Give a reason: the researcher and the register see it."
            )
            return None
        try:
            answer = self.source.decide_access(
                row["id"],
                approve=approve,
                reason=reason,
                days=int(self.access_days.value) if approve else None,
            )
        except InsituError as exc:
            self.access_message.value = _error(exc)
            return None
        verb = "approved" if approve else "denied"
        self.access_message.value = _ok(f"Request #{row['id']} {verb}.")
        self.access_reason.value = ""
        self.refresh()
        return answer

    # -- releases --------------------------------------------------------------

    def _show_release(self) -> None:
        from insitu.errors import InsituError

        row = self._selected(self.release_rows, self.release_select.value)
        for button in (self.release_approve, self.release_deny):
            button.disabled = row is None
        self.release_image.layout.display = "none"
        if row is None:
            self.release_details.value = "<p><i>No releases waiting for review.</i></p>"
            self.release_preview.value = ""
            self.release_override.layout.display = "none"
            return
        checks = "".join(
            f"<tr><td style='padding:1px 8px'>{_e(c.get('rule'))}</td>"
            f"<td style='padding:1px 8px'>{_status(str(c.get('status')))}</td>"
            f"<td style='padding:1px 8px'>{_e(c.get('summary', c.get('message', '')))}</td></tr>"
            for c in row.get("checks", [])
        )
        self.release_details.value = (
            f"<p><b>{_e(row['user'])}</b> submitted <code>{_e(row['filename'])}</code> "
            f"({_e(row['kind'])}, {_e(row['size'])} bytes); checks: {_status(row['status'])}</p>"
            f"<p><b>Purpose:</b> {_e(row['purpose'])}</p>"
            f"<table>{checks}</table>"
        )
        self.release_override.layout.display = "flex" if row["status"] == "fail" else "none"
        try:
            text, image = self.source.release_preview(row["id"])
        except InsituError as exc:
            self.release_preview.value = _error(exc)
            return
        self.release_preview.value = (
            f"<p><b>Preview</b></p><pre style='max-height:240px;overflow:auto'>{_e(text)}</pre>"
        )
        if image:
            self.preview_image = image
            self.release_image.value = image
            self.release_image.layout.display = "block"

    def decide_release(self, *, approve: bool) -> Any:
        from insitu.errors import InsituError

        row = self._selected(self.release_rows, self.release_select.value)
        if row is None:
            return None
        reason = self.release_reason.value.strip()
        if not reason:
            self.release_message.value = _error(
                "Give a reason: it is audited and the researcher sees it."
            )
            return None
        override = self.release_override.value.strip() or None
        try:
            answer = self.source.decide_release(
                row["id"], approve=approve, reason=reason, override=override if approve else None
            )
        except InsituError as exc:
            self.release_message.value = _error(exc)
            return None
        verb = "approved" if approve else "denied"
        self.release_message.value = _ok(f"Release #{row['id']} {verb}.")
        self.release_reason.value = self.release_override.value = ""
        self.refresh()
        return answer


def _keep_or_first(select: Any) -> None:
    values = [value for _label, value in select.options]
    if select.value not in values:
        select.value = values[0] if values else None


def _error(text: Any) -> str:
    return f"<span style='color:#cf222e'>{_e(text)}</span>"


def _ok(text: str) -> str:
    return f"<span style='color:#1a7f37'>{_e(text)}</span>"
