"""Site control without a federation: approvals, the egress policy, the site mod, the
data tally, and the CLI's refusals (insecure off loopback, bad fingerprints)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.errors import (
    AppNotApprovedError,
    ConfigError,
    EgressRefusedError,
    InvalidRequestError,
)
from insitu.federation import approvals, node_data, processes
from insitu.federation.manifest import EgressManifest
from insitu.federation.policy import EgressPolicy, check_reply
from insitu.federation.site_mod import ERROR_EGRESS_REFUSED, SiteRun, site_mods

FP = "ab" * 32
SUBJECTS = [f"sub-{i:03d}" for i in range(12)]


def _content(**records) -> RecordDict:
    return RecordDict(records)


def _check(content, served=SUBJECTS, shapes=((8, 32, 32),), **policy):
    return check_reply(
        content,
        policy=EgressPolicy(**policy),
        subjects_served=served,
        identifiers=served,
        image_shapes=shapes,
    )


# --- approvals --------------------------------------------------------------

MANIFEST = EgressManifest(message_types=("query",), metrics=("m/*",))


def test_approve_check_revoke_and_audit(home):
    with pytest.raises(AppNotApprovedError, match="not approved"):
        approvals.check(home, FP, "locat")
    with pytest.raises(InvalidRequestError, match="no egress manifest known"):
        approvals.approve(home, FP, "locat", days=7, user="sam")
    approval = approvals.approve(
        home, FP.upper(), "locat", days=7, user="sam", note="reviewed", manifest=MANIFEST
    )
    assert approval.fingerprint == FP
    assert approval.egress_manifest() == MANIFEST
    assert approvals.check(home, FP, "locat").approved_by == "sam"
    with pytest.raises(AppNotApprovedError):
        approvals.check(home, FP, "other-dataset")
    later = datetime.now(UTC) + timedelta(days=8)
    with pytest.raises(AppNotApprovedError, match="expired"):
        approvals.check(home, FP, "locat", now=later)
    approvals.revoke(home, FP, "locat", user="sam")
    with pytest.raises(AppNotApprovedError, match="revoked"):
        approvals.check(home, FP, "locat")
    kinds = [e["kind"] for e in AuditLog(home).entries()]
    assert "federation.approve" in kinds and "federation.revoke" in kinds
    assert AuditLog(home).verify().entries == len(kinds)


def test_bad_fingerprint_days_and_unknown_revoke_are_refused(home):
    with pytest.raises(InvalidRequestError, match="64 hex"):
        approvals.approve(home, "abc", "locat", days=1, user="sam")
    with pytest.raises(InvalidRequestError, match="1 to 366 days"):
        approvals.approve(home, FP, "locat", days=0, user="sam")
    with pytest.raises(InvalidRequestError, match="no active approval"):
        approvals.revoke(home, FP, None, user="sam")


def test_refusals_wait_in_pending_until_approved(home):
    approvals.record_refusal(home, FP, "locat", app="x/app==1", run_id=7, reason="no")
    approvals.record_refusal(
        home, FP, "locat", app="x/app==1", run_id=8, reason="no", manifest=MANIFEST.to_dict()
    )
    (row,) = approvals.pending(home)
    assert (row.attempts, row.last_run_id) == (2, 8)
    # The manifest the app declared when it was refused is what the steward approves.
    approval = approvals.approve(home, FP, "locat", days=1, user="sam")
    assert approval.egress_manifest() == MANIFEST
    assert approvals.pending(home) == []


def test_cli_approve_pending_revoke(home, capsys, tmp_path):
    approvals.record_refusal(home, FP, "locat", app="x/app==1", run_id=1, reason="no")
    assert main(["federation", "pending", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["fingerprint"] == FP
    assert main(["federation", "approve", FP, "--dataset", "locat", "--days", "3"]) == 1
    assert "no egress manifest known" in capsys.readouterr().err
    manifest = tmp_path / "egress.toml"
    manifest.write_text('[tool.insitu.egress]\nmessage-types = ["query"]\nmetrics = ["m/*"]\n')
    argv = ["federation", "approve", FP, "--dataset", "locat", "--days", "3"]
    assert main([*argv, "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "approved app" in out and "message types: query" in out
    assert main(["federation", "approvals", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "active"
    assert main(["federation", "revoke", FP]) == 0
    assert main(["federation", "revoke", FP]) == InvalidRequestError.exit_code
    assert "no active approval" in capsys.readouterr().err


def test_fingerprint_is_flowers_fab_hash(tmp_path, capsys):
    import hashlib

    from flwr.cli.build import build_fab_from_disk

    from insitu.federation.analytics import analytics_fab_files

    app = tmp_path / "insitu-analytics"
    app.mkdir()
    for name, data in analytics_fab_files().items():
        (app / name).write_bytes(data)
    assert main(["federation", "fingerprint", str(app)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    from insitu.federation import analytics_fingerprint

    assert printed == analytics_fingerprint()
    (app / "insitu_analytics_app.py").write_text("# changed\n")
    assert main(["federation", "fingerprint", str(app)]) == 0
    assert capsys.readouterr().out.strip() != printed


# --- processes: insecure only on loopback ----------------------------------------


@pytest.mark.parametrize("address", ["10.0.0.5:9093", "example.org:9093", "0.0.0.0:9093"])
def test_insecure_is_refused_off_loopback(home, address):
    with pytest.raises(ConfigError, match="only allowed on a loopback"):
        processes.start_coordinator(home, address, insecure=True)
    with pytest.raises(ConfigError, match="only allowed on a loopback"):
        processes.start_site(home, address, "locat", insecure=True)


def test_no_tls_and_no_insecure_is_refused(home):
    with pytest.raises(ConfigError, match="no TLS certificates"):
        processes.start_coordinator(home, "127.0.0.1:1")
    with pytest.raises(ConfigError, match="needs TLS"):
        processes.start_coordinator(home, "127.0.0.1:1", insecure=True, node_auth=True)


def test_flower_connection_file(tmp_path):
    import tomllib

    path = processes.write_flower_connection(tmp_path, "locat", "127.0.0.1:9", insecure=True)
    processes.write_flower_connection(
        tmp_path, "other", "coord.example.org:9093", insecure=False, root_certificates="/ca.pem"
    )
    data = tomllib.loads(path.read_text())
    assert data["superlink"]["locat"] == {"address": "127.0.0.1:9", "insecure": True}
    assert data["superlink"]["other"]["root-certificates"] == "/ca.pem"
    assert data["superlink"]["default"] == "other"


# --- the egress policy --------------------------------------------------------


def test_model_update_and_scalar_metrics_pass():
    content = _content(
        arrays=ArrayRecord([np.zeros((8, 1, 3, 3), np.float32), np.zeros(8, np.float32)]),
        metrics=MetricRecord({"num-examples": 48, "train-loss": 0.5}),
    )
    decision = _check(content)
    assert decision.allowed, decision.reasons
    assert decision.subjects == 12 and decision.num_examples == 48


def test_raw_slice_and_volume_are_refused_unless_allowed():
    for shape in ((32, 32), (8, 32, 32), (4, 1, 32, 32), (8, 32)):
        content = _content(arrays=ArrayRecord([np.zeros(shape, np.float32)]))
        decision = _check(content)
        assert not decision.allowed
        assert "shape of image data" in " ".join(decision.reasons)
    content = _content(arrays=ArrayRecord([np.zeros((32, 32), np.float32)]))
    assert _check(content, allow_image_shaped=True).allowed


def test_too_few_subjects_is_refused():
    content = _content(metrics=MetricRecord({"mean": 1.0}))
    decision = _check(content, served=SUBJECTS[:9])
    assert not decision.allowed
    assert "covers 9 subject(s); this site's minimum is 10" in decision.reasons[0]
    with pytest.raises(EgressRefusedError, match="would refuse"):
        decision.require_allowed()


def test_per_subject_metrics_are_refused():
    named = _content(metrics=MetricRecord({f"hu:{SUBJECTS[0]}": 1.0}))
    assert "named after a subject" in " ".join(_check(named).reasons)
    many = _content(metrics=MetricRecord({f"v{i}": float(i) for i in range(12)}))
    assert "one value per subject" in " ".join(_check(many).reasons)


def test_lists_non_finite_config_records_and_size_are_refused():
    listed = _content(metrics=MetricRecord({"values": [1.0, 2.0]}))
    assert "must be single numbers" in " ".join(_check(listed).reasons)
    nan = _content(metrics=MetricRecord({"mean": float("nan")}))
    assert "not finite" in " ".join(_check(nan).reasons)
    nan_array = _content(arrays=ArrayRecord([np.array([np.inf, 1.0])]))
    assert "not finite" in " ".join(_check(nan_array).reasons)
    text = _content(notes=ConfigRecord({"note": "subject 7 had a big appendix"}))
    assert "ConfigRecord" in " ".join(_check(text).reasons)
    big = _content(arrays=ArrayRecord([np.zeros(1000, np.float64)]))
    assert "limit is 100" in " ".join(_check(big, max_reply_bytes=100).reasons)


def test_legacy_fit_records_pass_only_with_numbers_and_success():
    ok = _content(
        **{
            "fitres.parameters": ArrayRecord([np.zeros(5, np.float32)]),
            "fitres.metrics": ConfigRecord({"train-loss": 0.3}),
            "fitres.num_examples": MetricRecord({"num_examples": 40}),
            "fitres.status": ConfigRecord({"code": 0, "message": "Success"}),
        }
    )
    assert _check(ok).allowed
    chatty = _content(**{"fitres.status": ConfigRecord({"code": 0, "message": "sub-001 ok"})})
    assert not _check(chatty).allowed


# --- the site mod, around a ClientApp call ------------------------------------


class FakeDataset:
    def __init__(self, n: int) -> None:
        ids = SUBJECTS[:n]
        self.subjects = pd.DataFrame({"subject_id": ids, "n_series": 1})
        self.series = pd.DataFrame(
            {"subject_id": ids, "series_id": [f"ser-{s}" for s in ids], "shape": [(8, 32, 32)] * n}
        )
        self.tables = {"m": pd.DataFrame({"subject_id": ids, "arm": ["a", "b"] * (n // 2)})}

    def image(self, series_id: str):
        return np.zeros((8, 32, 32), np.int16)

    def header(self, series_id: str):
        return {}


def _call_with_mods(home, app, n_subjects=12, **policy):
    from flwr.client.mod.utils import make_ffn

    from insitu.config import load_config

    config = load_config(home)
    import dataclasses

    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **policy))
    run = SiteRun(home, "test-site", "locat", FP, "x/app==1", 5)
    from flwr.supercore.task_identity import TaskIdentity

    # What flwr's ClientApp process sets before a message is built.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 5, 1
    node_data.set_current(node_data.SiteData(FakeDataset(n_subjects), site="s", dataset="locat"))
    try:
        msg = Message(RecordDict(), dst_node_id=1, message_type="query")
        msg.metadata.__dict__["_message_id"] = "m"
        return make_ffn(app, site_mods(run, config.policy))(msg, None)
    finally:
        node_data.set_current(None)


def test_site_mods_name_the_site_and_audit_what_leaves(home):
    def app(msg, ctx):
        return Message(RecordDict({"m": MetricRecord({"mean": 1.0})}), reply_to=msg)

    reply = _call_with_mods(home, app)
    assert not reply.has_error()
    assert "site:test-site" in reply.content["insitu.site"]
    (entry,) = AuditLog(home).query(kind="federation.send")
    assert entry["details"]["message_type"] == "query"


def test_dp_noises_arrays_of_every_message_type_and_secagg_refuses_them(home):
    exact = np.arange(20, dtype=np.float64)

    def app(msg, ctx):
        return Message(RecordDict({"a": ArrayRecord({"x": Array(exact)})}), reply_to=msg)

    reply = _call_with_mods(home, app, differential_privacy=True)
    noised = reply.content["a"]["x"].numpy()
    assert noised.shape == exact.shape and not np.array_equal(noised, exact)
    (privacy,) = AuditLog(home).query(kind="federation.privacy")
    assert privacy["details"]["message_type"] == "query"

    reply = _call_with_mods(home, app, secure_aggregation=True)
    assert reply.has_error() and reply.error.code == ERROR_EGRESS_REFUSED
    assert "only in SecAgg+ train rounds" in reply.error.reason


def test_site_data_counts_subjects_from_what_it_served():
    data = node_data.SiteData(FakeDataset(12), site="s", dataset="locat")
    assert data.served_subjects == set()
    _ = data.series  # the index serves no data
    assert data.served_subjects == set()
    data.image("ser-sub-003")
    assert data.served_subjects == {"sub-003"}
    data.table("m")
    assert len(data.served_subjects) == 12
    with pytest.raises(KeyError, match="has no table"):
        data.table("nope")


def test_cli_refuses_insecure_off_loopback_and_says_why(home, capsys):
    code = main(["federation", "coordinator", "--address", "10.1.2.3:9093", "--insecure"])
    assert code == ConfigError.exit_code
    assert "only allowed on a loopback address" in capsys.readouterr().err
    code = main(["federation", "join", "10.1.2.3:9093", "--dataset", "locat", "--insecure"])
    assert code == ConfigError.exit_code
    assert main(["federation", "stop"]) == 0
    assert "no federation process" in capsys.readouterr().out
