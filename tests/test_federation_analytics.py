"""Federated analytics and the training server loop, without processes: per-arm summaries
of three in-memory sites merge to the pooled answer; a round without enough sites fails
naming the missing site."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insitu.errors import InvalidRequestError
from insitu.federation.analytics import AnalysisSpec, combine, feature_frame, parse_reply
from insitu.federation.analytics import site_summary as summarise
from insitu.federation.node_data import SiteData


class Site:
    """A dataset-like object: subjects, series, a measurement table, images."""

    def __init__(self, name: str, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        ids = [f"{name}-sub-{i:03d}" for i in range(n)]
        self.subjects = pd.DataFrame({"subject_id": ids, "n_series": 1})
        self.series = pd.DataFrame(
            {"subject_id": ids, "series_id": [f"{s}-ser" for s in ids], "shape": [(4, 8, 8)] * n}
        )
        arms = np.array(["low-dose", "standard-dose"])[rng.integers(0, 2, n)]
        self.tables = {
            "measurements": pd.DataFrame(
                {
                    "subject_id": ids,
                    "arm": arms,
                    # Large offset, small spread: where a careless merge loses digits.
                    "diameter_mm": 1e4 + rng.normal(0, 0.01, n),
                }
            )
        }
        self._images = {f"{s}-ser": rng.normal(-50, 20, (4, 8, 8)) for s in ids}

    def image(self, series_id: str):
        return self._images[series_id]

    def header(self, series_id: str):
        return {}


SITES = {"site-a": Site("a", 40, 1), "site-b": Site("b", 25, 2), "site-c": Site("c", 33, 3)}


def _run(spec: AnalysisSpec, min_cell_count: int = 5):
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    replies = []
    for name, source in SITES.items():
        data = SiteData(source, site=name, dataset="locat")
        content = summarise(
            feature_frame(data, spec), spec, site=name, min_cell_count=min_cell_count
        )
        assert set(content.config_records) == set()  # arrays and metrics only
        replies.append(parse_reply(content))
    return combine(replies, spec)


def _pooled(column: str) -> pd.DataFrame:
    return pd.concat([s.tables["measurements"] for s in SITES.values()], ignore_index=True)


def test_table_column_by_arm_equals_pooled():
    edges = (9999.9, 9999.99, 10000.0, 10000.01, 10000.1)
    spec = AnalysisSpec("locat", "measurements.diameter_mm", by="arm", bins=edges)
    out = _run(spec, min_cell_count=1)
    pooled = _pooled("diameter_mm")
    assert [row["group"] for row in out.groups] == ["low-dose", "standard-dose"]
    for row in out.groups:
        values = pooled.loc[pooled["arm"] == row["group"], "diameter_mm"].to_numpy()
        assert row["n"] == len(values) and row["subjects"] == len(values)
        assert abs(row["mean"] - values.mean()) <= 1e-12 * abs(values.mean())
        assert abs(row["variance"] - values.var(ddof=1)) <= 1e-12 * values.var(ddof=1)
        counts = [h["count"] for h in out.histogram if h["group"] == row["group"]]
        assert counts == np.histogram(values, bins=edges)[0].tolist()
    assert out.suppressed == []


def test_image_feature_overall_and_small_cells_are_withheld():
    spec = AnalysisSpec("locat", "hu_mean")
    out = _run(spec)
    (row,) = out.groups
    values = [
        SITES[s].image(f"{sid}")[1:3, 2:6, 2:6].mean()
        for s in SITES
        for sid in SITES[s].series.series_id
    ]
    assert row["n"] == len(values)
    assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    withheld = _run(AnalysisSpec("locat", "measurements.diameter_mm", by="arm"), 30)
    assert {s["site"] for s in withheld.suppressed} == {"site-a", "site-b", "site-c"}


def test_unknown_feature_names_the_choices():
    data = SiteData(SITES["site-a"], site="site-a", dataset="locat")
    with pytest.raises(InvalidRequestError, match="hu_mean"):
        feature_frame(data, AnalysisSpec("locat", "no_such_column"))


def test_spec_round_trips_through_run_config():
    spec = AnalysisSpec("locat", "hu_mean", by="arm", bins=(0.0, 1.5), min_sites=3)
    assert AnalysisSpec.from_run_config(spec.to_run_config()) == spec


class FakeGrid:
    """A Grid whose site 'site-c' is gone after round 1."""

    def __init__(self) -> None:
        self.round = 0
        self.nodes = {1: "site-a", 2: "site-b", 3: "site-c"}

    def get_nodes(self):
        from types import SimpleNamespace

        return [SimpleNamespace(node_id=n, status="online") for n in self.nodes]

    def push_messages(self, messages):
        self.round += 1
        self.pending = list(messages)
        if self.round == 2:
            del self.nodes[3]
        return [f"m{i}" for i, _ in enumerate(self.pending)]

    def pull_messages(self, ids):
        from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

        replies = []
        for i, msg in enumerate(self.pending):
            node = msg.metadata.dst_node_id
            if node not in self.nodes or f"m{i}" not in ids:
                continue
            content = RecordDict(
                {
                    "arrays": ArrayRecord(msg.content["arrays"].to_numpy_ndarrays()),
                    "metrics": MetricRecord({"num-examples": 10, "train-loss": 0.5}),
                    "insitu.site": MetricRecord({f"site:{self.nodes[node]}": 1}),
                }
            )
            reply = Message(content, reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            reply.metadata.__dict__["_reply_to_message_id"] = f"m{i}"
            replies.append(reply)
        return replies


def test_training_round_without_enough_sites_fails_naming_the_site(capsys):
    pytest.importorskip("torch")
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from insitu.federation.train_app import server_app

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    config = {"num-rounds": 2, "min-sites": 3, "wait-for-sites": 0, "round-timeout": 5.0,
              "lr": 0.05, "local-epochs": 1, "proximal-mu": 0.0}  # fmt: skip
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    app = server_app()
    with pytest.raises(RuntimeError, match=r"round 2: 2 site\(s\) answered.*site-c"):
        app(grid=FakeGrid(), context=context)
    assert "INSITU-ROUND 1: sites ['site-a', 'site-b', 'site-c']" in capsys.readouterr().out


def test_job_status_for_the_monitor():
    from insitu.federation.apps import RunOutcome, job_status

    analytics = RunOutcome(
        7,
        "finished:completed",
        "",
        "",
        {"sites": ["site-a"], "refused": [{"node": 3, "reason": "site 'site-c' refused the run"}]},
    )
    assert job_status(analytics) == {
        "run_id": "7",
        "state": "finished",
        "sites": {
            "site-a": "done",
            "site-c": {"state": "refused", "detail": "site 'site-c' refused the run"},
        },
    }
    rounds = [
        {"round": 1, "sites": ["site-a", "site-b"], "problems": [], "train_loss": 0.7},
        {"round": 2, "sites": ["site-a"], "problems": ["site-b: no reply"], "train_loss": 0.6},
    ]
    training = job_status(RunOutcome(8, "finished:failed", "boom", "", {"rounds": rounds}))
    assert training["state"] == "failed" and training["message"] == "boom"
    assert training["metrics"]["train_loss"] == [[1, 0.7], [2, 0.6]]
    assert training["sites"]["site-b"]["state"] == "dropped"
