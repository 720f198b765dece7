"""Federated job monitor: rounds, each site's state and a live metric plot.

The monitor is driven by a *status source*: any callable that returns the
job's status as a dict (the contract is in docs/architecture.md, "Federated
job status"). :meth:`JobMonitor.watch` polls it on a background thread, so a
long run keeps updating while the researcher works in other cells::

    monitor = JobMonitor(title="FedAvg, 3 sites")
    monitor.watch(lambda: run.status())     # returns at once
    monitor                                  # shows and keeps updating

Status dict (missing keys are fine)::

    {"run_id": "17", "state": "running", "round": 2, "rounds": 5,
     "sites": {"site-a": "running", "site-b": {"state": "refused", "detail": "app not approved"}},
     "metrics": {"loss": [[1, 0.71], [2, 0.52]]}, "message": "..."}
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable
from typing import Any

from insitu.widgets._render import figure_png

__all__ = ["SITE_STATES", "TERMINAL", "JobMonitor", "status_from_rounds"]

SITE_STATES = {
    "waiting": "#57606a",
    "approved": "#0969da",
    "running": "#9a6700",
    "done": "#1a7f37",
    "refused": "#cf222e",
    "dropped": "#cf222e",
}
TERMINAL = ("finished", "failed", "stopped")
_JOB_COLOURS = {"finished": "#1a7f37", "failed": "#cf222e", "stopped": "#57606a"}

StatusSource = Callable[[], dict[str, Any]]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _site(value: Any) -> tuple[str, str]:
    if isinstance(value, dict):
        return str(value.get("state", "waiting")), str(value.get("detail", "") or "")
    return str(value or "waiting"), ""


class JobMonitor:
    """An ipywidgets view of one federated run; feed it with update() or watch()."""

    def __init__(
        self, *, title: str = "Federated job", interval: float = 1.0, rounds: int | None = None
    ) -> None:
        """``rounds``: the run's number of rounds, shown until the status names it."""
        import ipywidgets as w

        self.interval = interval
        self.expected_rounds = rounds
        self.status: dict[str, Any] = {}
        self.updates = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.title = w.HTML(f"<h3 style='margin:4px 0'>{_e(title)}</h3>")
        self.state = w.HTML()
        self.rounds = w.IntProgress(value=0, min=0, max=1, description="Rounds")
        self.rounds_label = w.HTML()
        self.sites = w.HTML()
        self.plot = w.Image(format="png", width=400)  # 2x pixels shown at 400 px: crisp
        self.message = w.HTML()
        self.widget = w.VBox(
            [
                self.title,
                self.state,
                w.HBox([self.rounds, self.rounds_label]),
                self.sites,
                self.plot,
                self.message,
            ]
        )
        self.update({})

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- feeding ---------------------------------------------------------------

    def update(self, status: dict[str, Any]) -> None:
        """Show one status dict (any thread may call this)."""
        self.status = dict(status)
        self.updates += 1
        job = str(status.get("state", "pending"))
        colour = _JOB_COLOURS.get(job, "#9a6700")
        run = f"run {_e(status['run_id'])} · " if status.get("run_id") else ""
        self.state.value = f"{run}<b style='color:{colour}'>{_e(job)}</b>"
        known = status.get("rounds") or self.expected_rounds
        total = max(int(known or 1), 1)
        done = min(max(int(status.get("round") or 0), 0), total)
        self.rounds.max, self.rounds.value = total, done
        self.rounds.bar_style = {"finished": "success", "failed": "danger"}.get(job, "info")
        if known:
            self.rounds_label.value = f"round {done} of {total}"
        else:  # the number of rounds is not known yet: never "of 1"
            self.rounds_label.value = f"round {done}" if done else "waiting for the first round"
        self.sites.value = self._sites_html(status.get("sites") or {})
        metrics = status.get("metrics") or {}
        if metrics:
            self.plot.value = self._plot(metrics)
            self.plot.layout.display = "block"
        else:
            self.plot.layout.display = "none"
        self.message.value = _e(status.get("message", ""))

    def site_states(self) -> dict[str, str]:
        return {name: _site(v)[0] for name, v in (self.status.get("sites") or {}).items()}

    def watch(self, source: StatusSource) -> threading.Thread:
        """Poll ``source`` every ``interval`` s on a background thread until the job ends."""
        self.stop()
        self._stop = threading.Event()
        stop = self._stop

        def loop() -> None:
            while not stop.is_set():
                try:
                    status = source()
                except Exception as exc:  # shown in the widget; never kills the kernel
                    self.errors.append(repr(exc))
                    self.message.value = (
                        f"<span style='color:#cf222e'>status unavailable: {_e(exc)}</span>"
                    )
                else:
                    self.update(status)
                    if str(status.get("state")) in TERMINAL:
                        return
                stop.wait(self.interval)

        self.thread = threading.Thread(target=loop, name="insitu-job-monitor", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        """Stop watching (the job itself goes on)."""
        self._stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=10)

    # -- drawing ---------------------------------------------------------------

    @staticmethod
    def _sites_html(sites: dict[str, Any]) -> str:
        if not sites:
            return "<p><i>no site has answered yet</i></p>"
        rows = []
        for name, value in sorted(sites.items()):
            state, detail = _site(value)
            colour = SITE_STATES.get(state, "#57606a")
            rows.append(
                f"<tr><td style='padding:2px 10px'><code>{_e(name)}</code></td>"
                f"<td style='padding:2px 10px'><b style='color:{colour}'>{_e(state)}</b></td>"
                f"<td style='padding:2px 10px'>{_e(detail)}</td></tr>"
            )
        return "<table>" + "".join(rows) + "</table>"

    @staticmethod
    def _plot(metrics: dict[str, Any]) -> bytes:
        from matplotlib.figure import Figure  # no pyplot: safe off the main thread
        from matplotlib.ticker import MaxNLocator

        # Drawn at twice the shown size and scaled down by the browser: crisp on any screen.
        fig = Figure(figsize=(5.0, 2.6), dpi=160)
        ax = fig.add_subplot()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        for name, points in sorted(metrics.items()):
            pairs = [
                (float(r), float(v)) for r, v in points if v is not None and math.isfinite(float(v))
            ]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), marker="o", label=str(name))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        return figure_png(fig)


def status_from_rounds(
    history: list[dict[str, Any]],
    *,
    rounds: int,
    sites: list[str] | tuple[str, ...] = (),
    state: str = "running",
    run_id: Any = None,
    message: str = "",
) -> dict[str, Any]:
    """The monitor's status dict from a training run's per-round history.

    ``history`` is what the federation's training app reports per round
    (``round``, ``sites`` that answered, ``problems``, ``train_loss``). A site
    that answered the last round is *done* (finished run) or *running*; one
    named in a problem is *refused* or *dropped*; the rest are *waiting*.
    """
    last = history[-1] if history else {}
    answered = set(last.get("sites", []))
    states: dict[str, Any] = {}
    for site in sorted(set(sites) | {s for h in history for s in h.get("sites", [])}):
        problem = next((p for p in last.get("problems", []) if p.startswith(f"{site}:")), "")
        if site in answered:
            states[site] = "done" if state == "finished" else "running"
        elif problem:
            kind = "dropped" if "no reply" in problem else "refused"
            states[site] = {"state": kind, "detail": problem.split(":", 1)[1].strip()}
        else:
            states[site] = "waiting"
    losses = [
        [h.get("round", i + 1), h["train_loss"]] for i, h in enumerate(history) if "train_loss" in h
    ]
    return {
        "run_id": run_id,
        "state": state,
        "round": len(history),
        "rounds": rounds,
        "sites": states,
        "metrics": {"train loss": losses} if losses else {},
        "message": message,
    }
