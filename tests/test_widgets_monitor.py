"""Federated job monitor: rounds, site states and the metric plot from a status source."""

from __future__ import annotations

import threading

from insitu.widgets.monitor import JobMonitor


def test_update_shows_rounds_sites_and_metrics() -> None:
    monitor = JobMonitor(title="FedAvg")
    assert monitor.plot.layout.display == "none"
    assert "no site has answered" in monitor.sites.value
    monitor.update(
        {
            "run_id": "7",
            "state": "running",
            "round": 2,
            "rounds": 5,
            "sites": {
                "site-a": "running",
                "site-b": {"state": "refused", "detail": "app <b>not</b> approved"},
                "site-c": "approved",
            },
            "metrics": {"loss": [[1, 0.7], [2, 0.5]], "accuracy": [[1, 0.6], [2, float("nan")]]},
        }
    )
    assert (monitor.rounds.value, monitor.rounds.max) == (2, 5)
    assert monitor.rounds_label.value == "round 2 of 5"
    assert monitor.site_states() == {
        "site-a": "running",
        "site-b": "refused",
        "site-c": "approved",
    }
    assert "app &lt;b&gt;not&lt;/b&gt; approved" in monitor.sites.value
    assert "run 7" in monitor.state.value
    assert monitor.plot.layout.display == "block"
    first_plot = bytes(monitor.plot.value)
    assert first_plot[:4] == b"\x89PNG"
    monitor.update(
        {
            "state": "finished",
            "round": 5,
            "rounds": 5,
            "sites": {"site-a": "done", "site-b": "refused", "site-c": "dropped"},
            "metrics": {"loss": [[1, 0.7], [2, 0.5], [3, 0.4], [4, 0.35], [5, 0.3]]},
        }
    )
    assert monitor.rounds.bar_style == "success"
    assert bytes(monitor.plot.value) != first_plot
    assert monitor.site_states()["site-c"] == "dropped"


def test_watch_polls_a_background_job_until_it_ends() -> None:
    # A run that advances one round per poll; the monitor must follow it to the end.
    calls: list[int] = []
    done = threading.Event()

    def status() -> dict:
        calls.append(1)
        n = len(calls)
        if n == 2:
            raise ConnectionError("coordinator restarting")
        state = "finished" if n >= 5 else "running"
        if state == "finished":
            done.set()
        return {"state": state, "round": min(n, 4), "rounds": 4, "sites": {"site-a": "running"}}

    monitor = JobMonitor(interval=0.01)
    thread = monitor.watch(status)
    assert done.wait(timeout=30)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the watcher ends with the job"
    assert monitor.status["state"] == "finished" and monitor.rounds.value == 4
    assert monitor.errors == ["ConnectionError('coordinator restarting')"]
    assert len(calls) == 5


def test_stop_ends_watching_a_job_that_goes_on() -> None:
    polled = threading.Event()

    def status() -> dict:
        polled.set()
        return {"state": "running", "round": 1, "rounds": 100}

    monitor = JobMonitor(interval=0.01)
    thread = monitor.watch(status)
    assert polled.wait(timeout=30)
    monitor.stop()
    assert not thread.is_alive()
    assert monitor.status["state"] == "running"


def test_status_from_a_training_runs_rounds() -> None:
    from insitu.widgets.monitor import status_from_rounds

    history = [
        {"round": 1, "sites": ["site-a", "site-b", "site-c"], "problems": [], "train_loss": 0.69},
        {
            "round": 2,
            "sites": ["site-a", "site-b"],
            "problems": ["site-c: no reply (left the federation or timed out)"],
            "train_loss": 0.61,
        },
    ]
    status = status_from_rounds(history, rounds=3, sites=["site-a", "site-b", "site-c", "site-d"])
    monitor = JobMonitor()
    monitor.update(status)
    assert monitor.site_states() == {
        "site-a": "running",
        "site-b": "running",
        "site-c": "dropped",
        "site-d": "waiting",
    }
    assert monitor.rounds_label.value == "round 2 of 3"
    assert status["metrics"] == {"train loss": [[1, 0.69], [2, 0.61]]}
    done = status_from_rounds(history[:1], rounds=1, state="finished")
    assert set(done["sites"].values()) == {"done"}
