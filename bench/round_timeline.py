"""Where an analytics run's time went: its log lines as a timeline of steps (bench round).

``bench_round.py`` stamps every line the SuperLink (with its ServerApps) and the
SuperNodes (with their site runners) log while a run goes, in seconds after the
run was submitted. This module finds the steps in those lines (the first time
each was seen, per run) and summarises many runs as medians with min-max.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence

__all__ = ["STEPS", "runner_steps", "steps", "table"]

Event = Sequence[object]  # (seconds after submission, log name, text)

# (label, which log, text that marks the step, "first" or "last" over the sites, or
# "final": its last occurrence). Steps marked (DEBUG) are seen only when the bench runs
# with FLWR_LOG_LEVEL=DEBUG (the SuperLink then logs every Runtime API call).
STEPS: tuple[tuple[str, str, str, str], ...] = (
    ("ServerApp took the run (pulled its input)", "superlink", "Started task", "first"),
    ("first site received its message", "site", "Receiving: query message", "first"),
    ("last site received its message", "site", "Receiving: query message", "last"),
    ("last site has the message's contents", "site", "Received successfully", "last"),
    ("last site's app installed in its sandbox", "site", "Successfully installed", "last"),
    ("first site's runner done (reply checked)", "site", "insitu site runner: run", "first"),
    ("last site's runner done (reply checked)", "site", "insitu site runner: run", "last"),
    ("first site sends its reply", "site", "Sending: query message", "first"),
    ("last site sends its reply", "site", "Sending: query message", "last"),
    ("first reply uploaded (SuperNode: sent)", "site", "Sent successfully", "first"),
    ("last reply uploaded (SuperNode: sent)", "site", "Sent successfully", "last"),
    (
        "ServerApp has the last reply (DEBUG: ConfirmMessageReceived)",
        "superlink",
        "Runtime.ConfirmMessageReceived",
        "final",
    ),
    ("ServerApp finished (task output pushed)", "superlink", "Finished task", "first"),
)

_RUNNER = re.compile(r"(pull|admit|app|data|push) ([0-9.]+) s|check ([0-9.]+) ms")


def steps(events: Sequence[Event]) -> dict[str, float]:
    """Seconds after submission of each step of one run (steps not seen are left out)."""
    found: dict[str, float] = {}
    for label, log, text, which in STEPS:
        per_site: dict[str, float] = {}
        for t, name, line in events:
            where = "superlink" if name == "superlink" else "site"
            if where == log and text in str(line):
                if which == "final":
                    per_site[str(name)] = float(str(t))
                else:
                    per_site.setdefault(str(name), float(str(t)))
        if per_site:
            pick: Callable[[list[float]], float] = min if which == "first" else max
            found[label] = pick(list(per_site.values()))
    return found


def runner_steps(events: Sequence[Event]) -> list[dict[str, float]]:
    """The site runners' own seconds per task (pull, admit, app, data: the part of app
    spent answering the app's reads, check, push)."""
    tasks = []
    for _, _, line in events:
        if "insitu site runner: run" not in str(line):
            continue
        task: dict[str, float] = {}
        for name, seconds, check_ms in _RUNNER.findall(str(line)):
            if name:
                task[name] = float(seconds)
            else:
                task["check"] = float(check_ms) / 1000
        tasks.append(task)
    return tasks


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(runs: Sequence[tuple[Sequence[Event], float]]) -> str:
    """A Markdown table: each step's median (min-max) over the runs, and per site task."""
    per_run = [steps(events) for events, _ in runs]
    lines = ["| step (s after submission) | median (min-max) | runs |", "| --- | --- | --- |"]
    for label, *_ in STEPS:
        values = [r[label] for r in per_run if label in r]
        lines.append(f"| {label} | {_cell(values)} | {len(values)} |")
    totals = [total for _, total in runs]
    lines.append(f"| run finished (result read back) | {_cell(totals)} | {len(totals)} |")
    tasks = [t for events, _ in runs for t in runner_steps(events)]
    if tasks:
        lines.append("")
        lines.append(f"per task at a site (site runner's line, n={len(tasks)}):")
        for name in ("pull", "admit", "app", "data", "check", "push"):
            lines.append(f"- {name}: {_cell([t[name] for t in tasks if name in t])} s")
    return "\n".join(lines)
