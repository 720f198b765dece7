"""A federated reply carries its site's citation and contribution; results fold them."""

from __future__ import annotations

import dataclasses

from cff_schema import validate_cff
from flwr.app import Message, MetricRecord, RecordDict

from insitu.config import load_config
from insitu.datasets.citation import parse_creator
from insitu.datasets.citations_db import set_citation
from insitu.federation import node_data
from insitu.federation.credit import CREDIT_RECORD, fold, read_credit
from insitu.federation.site_mod import SiteRun, site_mods

FP = "c" * 64


class FakeSource:
    """What SiteData reads of a dataset version: the published trial-a v1's index."""

    version = "v1"
    tables: dict = {}  # noqa: RUF012

    @property
    def subjects(self):
        import pandas as pd

        return pd.DataFrame({"subject_id": ["sub-0", "sub-1"]})

    @property
    def series(self):
        import pandas as pd

        return pd.DataFrame({"series_id": ["s1", "s2"], "subject_id": ["sub-0", "sub-1"]})

    def header(self, series_id):
        return {}


def _reply(home, app, message_type="query", **policy):
    from flwr.client.mod.utils import make_ffn
    from flwr.supercore.task_identity import TaskIdentity

    config = load_config(home)
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **policy))
    run = SiteRun(home, "test-site", "trial-a", FP, "x/app==1", 5)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 5, 1
    source = FakeSource()
    node_data.set_current(
        node_data.SiteData(source, site="test-site", dataset="trial-a", alias="locat")
    )
    try:
        msg = Message(RecordDict(), dst_node_id=1, message_type=message_type)
        msg.metadata.__dict__["_message_id"] = "m"
        return make_ffn(app, site_mods(run, config.policy))(msg, None)
    finally:
        node_data.set_current(None)


def _mean_of_subjects(msg, ctx):
    data = node_data.current()
    _ = data.subjects  # both subjects served
    return Message(RecordDict({"m": MetricRecord({"mean": 1.0})}), reply_to=msg)


def test_an_allowed_reply_carries_the_sites_citation_and_subjects(hub_home) -> None:
    set_citation(
        hub_home, actor="sam", dataset="trial-a", title="Trial A", licence="CC-BY-4.0",
        creators=[parse_creator("Lovelace, Ada;0000-0002-1825-0097")],
    )  # fmt: skip
    reply = _reply(hub_home, _mean_of_subjects, min_subjects=2)
    assert not reply.has_error()
    credit = read_credit(reply.content)
    assert credit is not None
    assert credit | {"citation": None} == {
        "site": "test-site", "dataset": "locat", "version": "v1", "subjects": 2, "citation": None,
    }  # fmt: skip
    assert credit["citation"]["title"] == "Trial A"
    assert credit["citation"]["creators"][0]["orcid"].endswith("0000-0002-1825-0097")
    # What the coordinator folds into a result: citations, a contribution table, files.
    other = credit | {"site": "site-b", "subjects": 30}
    folded = fold([credit, None, other, credit | {"subjects": 1}], title="Analysis")
    assert folded["contributions"] == [
        {"site": "site-b", "dataset": "locat", "version": "v1", "subjects": 30},
        {"site": "test-site", "dataset": "locat", "version": "v1", "subjects": 2},
    ]
    assert len(folded["citations"]) == 2
    cff = validate_cff(folded["citation_files"]["CITATIONS.cff"])
    assert [r["title"] for r in cff["references"]] == ["Trial A", "Trial A"]
    assert "| site-b | locat | v1 | 30 |" in folded["citation_files"]["CITATIONS.md"]


def test_a_refused_reply_carries_no_credit(hub_home) -> None:
    from flwr.app import Error

    def refused(msg, ctx):
        # What the site's checker hands the mods for a reply it refused (issue 13).
        _mean_of_subjects(msg, ctx)
        return Message(Error(code=4002, reason="site refused"), reply_to=msg)

    reply = _reply(hub_home, refused)
    assert reply.has_error() and not reply.has_content()
    assert read_credit(None) is None and CREDIT_RECORD == "insitu.credit"
