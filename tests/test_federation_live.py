"""A real federation on loopback: a SuperLink and three SuperNodes, each site with its own
node home and ingested data. Analytics, refusals, leaky apps, SecAgg+/DP, a site that
drops out and rejoins, and a coordinator restart."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fixtures_federation import DATASET, SITES, read_audit, set_policy

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.datasets.reader import open_dataset
from insitu.errors import ServiceError
from insitu.federation import analytics_fingerprint, analyze, approvals, processes
from insitu.federation.analytics import AnalysisSpec, analytics_fab, feature_frame
from insitu.federation.apps import build_fab, fingerprint, run_fab
from insitu.federation.node_data import SiteData
from insitu.supervisor import descendants

pytestmark = pytest.mark.slow

# Wide bins: each site's cells hold 0 or >= min_cell_count values, so none is withheld
# and the merged histogram must equal the pooled one exactly (suppression is unit-tested).
BINS = (-1000.0, -20.0, 1000.0)

LEAKY_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "leaky"
version = "1.0.0"
description = "an app that tries to take data out"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "leaky_app:server"
clientapp = "leaky_app:client"

[tool.flwr.app.config]
insitu-identity = ""
superlink = ""

[tool.insitu.egress]
message-types = ["query.*", "train"]
max-replies = 100
max-values-per-reply = 100000
max-values-per-run = 1000000
metrics = ["m/*"]

[[tool.insitu.egress.arrays]]
name = "leak/*"
dtype = "float32"
max-count = 4
"""

# Every class of issue 13 that the sandbox and the checker own, as one app.
LEAKY_APP = """
import socket

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

import insitu.federation.checker as checker
import insitu.federation.policy as policy
from insitu.federation import site_data
from insitu.federation.apps import report_result

client = ClientApp()
server = ServerApp()


def _plane(context):
    data = site_data(context)
    _ = data.subjects
    image = data.image(str(data.series.series_id.iloc[0])).values
    return data, image[image.shape[0] // 2].astype("float32")


def _arrays(msg, arrays):
    return Message(RecordDict({"leak": ArrayRecord({k: Array(v) for k, v in arrays.items()})}),
                   reply_to=msg)


@client.query("slice")
def raw_slice(msg, context):
    return _arrays(msg, {"slice": _plane(context)[1]})


@client.query("flat")
def flat(msg, context):
    return _arrays(msg, {"flat": _plane(context)[1].ravel()})


@client.query("split")
def split(msg, context):
    plane = _plane(context)[1]
    return _arrays(msg, {f"row{i}": row for i, row in enumerate(plane)})


@client.query("persubject")
def per_subject(msg, context):
    data = site_data(context)
    values = {}
    for row in data.series.itertuples():
        values[f"hu:{row.subject_id}"] = float(data.image(str(row.series_id)).mean())
    return Message(RecordDict({"m": MetricRecord(values)}), reply_to=msg)


@client.query("onepersubject")
def one_per_subject(msg, context):
    data = site_data(context)
    means = [float(data.image(str(s)).mean()) for s in data.series.series_id]
    return _arrays(msg, {"means": np.array(means, dtype="float32")})


@client.query("few")
def few_subjects(msg, context):
    data = site_data(context)
    ids = [str(s) for s in data.series.series_id.iloc[:3]]
    mean = sum(float(data.image(s).mean()) for s in ids) / 3
    return Message(RecordDict({"m": MetricRecord({"mean": mean})}), reply_to=msg)


@client.query("patch")
def patch(msg, context):
    # Replace the checks and inflate the tally in this process: the checker is elsewhere.
    checker.check_parsed = lambda *a, **k: None
    policy.check_reply = lambda *a, **k: None
    data, plane = _plane(context)
    data.served_subjects = {f"x{i}" for i in range(1000)}
    return _arrays(msg, {"slice": plane})


@client.query("raise")
def raises(msg, context):
    data = site_data(context)
    raise ValueError("subject " + str(data.subjects.subject_id.iloc[0]) + " has HU 71")


@client.query("error")
def error_reply(msg, context):
    data = site_data(context)
    return Message(Error(code=9, reason="first " + str(data.subjects.subject_id.iloc[0])),
                   reply_to=msg)


@client.query("readstore")
def read_store(msg, context):
    home = context.node_config.get("insitu-home", "/")
    return Message(RecordDict({"m": MetricRecord({"files": len(open(home).read())})}),
                   reply_to=msg)


@client.query("network")
def network(msg, context):
    host, port = context.run_config["superlink"].rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=5).close()
    return Message(RecordDict({"m": MetricRecord({"reached": 1})}), reply_to=msg)


@client.evaluate()
def evaluate(msg, context):
    return _arrays(msg, {"slice": _plane(context)[1]})


@client.train()
def train(msg, context):
    return Message(RecordDict({"m": MetricRecord({"x": 1.0})}), reply_to=msg)


ACTIONS = ["slice", "flat", "split", "persubject", "onepersubject", "few", "patch", "raise",
           "error", "readstore", "network"]


@server.main()
def main(grid, context):
    nodes = sorted(grid.get_node_ids())
    # Each action at one site (round robin), train at every site.
    types = ["query." + a for a in ACTIONS] + ["evaluate"]
    messages = [Message(RecordDict(), dst_node_id=nodes[i % len(nodes)], message_type=t)
                for i, t in enumerate(types)]
    messages += [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]
    out = []
    for reply in grid.send_and_receive(messages, timeout=600):
        out.append({"type": reply.metadata.message_type,
                    "code": reply.error.code if reply.has_error() else None,
                    "error": reply.error.reason if reply.has_error() else None,
                    "content": sorted(reply.content.keys()) if reply.has_content() else []})
    report_result(out)
"""


def _pooled(homes, feature: str, by: str) -> pd.DataFrame:
    frames = []
    spec = AnalysisSpec(DATASET, feature, by=by)
    for home in homes:
        data = SiteData(open_dataset(DATASET, home=home), site="x", dataset=DATASET)
        frames.append(feature_frame(data, spec))
    return pd.DataFrame(
        {
            "value": np.concatenate([f["value"].to_numpy() for f in frames]),
            "group": np.concatenate([f["group"].to_numpy() for f in frames]),
        }
    )


def _check_against_pooled(result: pd.DataFrame, pooled: pd.DataFrame, by: str) -> None:
    assert sorted(result[by]) == sorted(pooled["group"].unique())
    for row in result.itertuples():
        values = pooled.loc[pooled["group"] == getattr(row, by), "value"].to_numpy()
        assert row.n == len(values)
        assert abs(row.mean - values.mean()) <= 1e-12 * max(1.0, abs(values.mean()))
        assert abs(row.variance - values.var(ddof=1)) <= 1e-12 * max(1.0, values.var(ddof=1))
        hist = [h["count"] for h in result.attrs["histogram"] if h["group"] == getattr(row, by)]
        assert hist == np.histogram(values, bins=BINS)[0].tolist()
    assert result.attrs["suppressed"] == []


@pytest.fixture(scope="module", autouse=True)
def _small_cells(federation):
    # 12 subjects per site, 6 per arm: let arm cells of 6 out, keep 10 subjects per reply.
    for home in federation.homes.values():
        set_policy(home, min_cell_count=5, min_subjects=10)


def test_approved_sites_give_pooled_statistics_and_an_unapproved_site_refuses(federation):
    fp = analytics_fingerprint()
    for site in ("site-a", "site-b"):
        approvals.approve(federation.homes[site], fp, DATASET, days=1, user="sam")
    from insitu.datasets.citation import parse_creator
    from insitu.datasets.citations_db import set_citation

    set_citation(  # site-a's steward cites its dataset; site-b's is cited from its catalog
        federation.homes["site-a"], actor="sam", dataset=DATASET, title="LOCAT at site A",
        creators=[parse_creator("Lovelace, Ada;0000-0002-1825-0097")], licence="CC-BY-4.0",
    )  # fmt: skip
    result = analyze(
        **federation.researcher(),
        address=federation.address,
        insecure=True,
        dataset=DATASET,
        feature="hu_mean",
        by="KVP",
        bins=BINS,
        min_sites=2,
        timeout=300,
    )
    assert result.attrs["sites"] == ["site-a", "site-b"]
    (refusal,) = result.attrs["refused"]
    assert "site 'site-c' refused the run" in refusal["reason"]
    assert "not approved" in refusal["reason"]
    pooled = _pooled([federation.homes["site-a"], federation.homes["site-b"]], "hu_mean", "KVP")
    _check_against_pooled(result, pooled, "KVP")
    assert set(result["KVP"]) == {"100.0", "120.0"}  # the two dose arms
    # The result carries each site's citation and contribution (issue 17).
    assert [(c["site"], c["subjects"]) for c in result.attrs["contributions"]] == [
        ("site-a", 12), ("site-b", 12),
    ]  # fmt: skip
    titles = {c["site"]: c["title"] for c in result.attrs["citations"]}
    assert titles == {"site-a": "LOCAT at site A", "site-b": DATASET}
    from cff_schema import validate_cff

    cff = validate_cff(result.attrs["citation_files"]["CITATIONS.cff"])
    assert len(cff["references"]) == 2

    site_c = federation.homes["site-c"]
    (pending,) = approvals.pending(site_c)
    assert pending.fingerprint == fp
    assert read_audit(site_c, "federation.refuse")
    assert not read_audit(site_c, "federation.run")  # refused before any data was read
    replies = read_audit(federation.homes["site-a"], "federation.reply")
    assert replies[-1]["details"]["decision"] == "allowed"
    assert replies[-1]["details"]["subjects"] == 12
    # Audit entries name the researcher, verified at each site (S10).
    for site in ("site-a", "site-b"):
        assert read_audit(federation.homes[site], "federation.run")[-1]["user"] == "alice@site-a"


def test_researchers_see_and_stop_only_their_own_runs(federation):
    from flwr.proto.control_pb2 import ListRunsRequest, StopRunRequest, StreamLogsRequest

    from insitu.federation.apps import RunHandle
    from insitu.federation.control_client import connection as _connection
    from insitu.federation.control_client import control as _control

    # alice's run waits for a fourth site that never comes: it keeps running.
    alice = federation.researcher()
    handle = RunHandle.submit(
        analytics_fab(),
        address=federation.address,
        insecure=True,
        run_config={"dataset": DATASET, "feature": "hu_mean", "min-sites": 4, "timeout": 600.0},
        **alice,
    )
    connection = _connection(None, federation.address, True)
    with _control(connection, federation.tokens["mallory"]) as mallory:
        assert handle.run_id not in mallory.ListRuns(ListRunsRequest()).run_dict
        for call, request in (
            (mallory.ListRuns, ListRunsRequest(run_id=handle.run_id)),
            (mallory.StopRun, StopRunRequest(run_id=handle.run_id)),
            (lambda r: list(mallory.StreamLogs(r)), StreamLogsRequest(run_id=handle.run_id)),
        ):
            with pytest.raises(httpx.HTTPStatusError, match="403 Forbidden"):
                call(request)
    for token in ("insitu-not-a-token", ""):
        with (
            _control(connection, token) as stranger,
            pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"),
        ):
            stranger.ListRuns(ListRunsRequest())
    assert handle.status()["state"] in ("pending", "running")  # mallory did not stop it
    with _control(connection, alice["token"]) as own:
        assert handle.run_id in own.ListRuns(ListRunsRequest()).run_dict
        assert own.StopRun(StopRunRequest(run_id=handle.run_id)).success
    refusals = read_audit(federation.coordinator, "control.refuse")
    assert {r["user"] for r in refusals} == {"mallory"} and len(refusals) >= 3


def test_unsigned_or_forged_identities_are_refused_and_audited(federation, tmp_path):
    import json

    from insitu.config import NodeHome, init_home
    from insitu.errors import ServiceError
    from insitu.federation import identity

    ask = {
        "address": federation.address,
        "insecure": True,
        "dataset": DATASET,
        "feature": "hu_mean",
        "timeout": 200,
        "token": federation.tokens["alice"],
    }
    with pytest.raises(ServiceError, match="carries no researcher identity"):
        analyze(**ask, identity="")
    # A home that is not trusted signs "alice of site-a": the signature is not site-a's.
    evil = NodeHome(tmp_path / "evil")
    init_home(evil, "site-a")
    from insitu.hub.accounts import AccountStore

    with AccountStore(evil) as accounts:
        accounts.add("alice", "researcher", None, actor="mallory")
    with pytest.raises(ServiceError, match="forged or altered"):
        analyze(**ask, identity=identity.signer(evil, "alice"))
    site_a = federation.homes["site-a"]
    refusals = read_audit(site_a, "federation.refuse")[-2:]
    assert [r["user"] for r in refusals] == ["unknown (no identity)", "alice@site-a (unverified)"]
    assert "eyJ" not in json.dumps(refusals)  # no token (base64 JSON) in the audit log


def test_a_site_that_has_not_approved_the_researcher_refuses_and_the_others_go_on(federation):
    from insitu.federation import analytics_fingerprint

    for home in federation.homes.values():
        approvals.approve(home, analytics_fingerprint(), DATASET, days=1, user="sam")
    # mallory (home site-b) is approved for the dataset at site-b only.
    result = analyze(
        **federation.researcher("mallory", home="site-b"),
        address=federation.address,
        insecure=True,
        dataset=DATASET,
        feature="hu_mean",
        min_sites=1,
        timeout=300,
    )
    assert result.attrs["sites"] == ["site-b"]
    reasons = sorted(r["reason"] for r in result.attrs["refused"])
    assert len(reasons) == 2
    assert all("mallory@site-b is not approved for dataset 'locat'" in r for r in reasons)
    for site in ("site-a", "site-c"):
        (entry,) = [
            e
            for e in read_audit(federation.homes[site], "federation.refuse")
            if e["user"] == "mallory@site-b"
        ]
        assert "not approved" in entry["details"]["reason"]


def test_a_leaky_app_is_stopped_by_each_site(federation):
    """Issue 13's classes, each site: sandboxed app, checker on the bytes, fixed error texts."""
    fab = build_fab(
        {"pyproject.toml": LEAKY_PYPROJECT.encode(), "leaky_app.py": LEAKY_APP.encode()}
    )
    for home in federation.homes.values():
        approvals.approve(home, fingerprint(fab), DATASET, days=1, user="sam", fab=fab)
    # A malformed message breaks SecAgg+'s mod at site-c (with DP on): that run fails there ...
    site_c = federation.homes["site-c"]
    set_policy(site_c, secure_aggregation=True, differential_privacy=True)
    try:
        outcome = run_fab(
            fab,
            address=federation.address,
            insecure=True,
            timeout=900,
            run_config={"superlink": federation.address},
            **federation.researcher(),
        )
    finally:
        set_policy(site_c, secure_aggregation=False, differential_privacy=False)
    assert outcome.completed, outcome.logs[-3000:]
    assert all(r["content"] == [] for r in outcome.result), outcome.result  # nothing left
    by_type: dict[str, list] = {}
    for reply in outcome.result:
        by_type.setdefault(reply["type"], []).append(reply)
    assert len(by_type["train"]) == 3 and len(outcome.result) == 12 + 3, by_type

    def reasons(action: str) -> str:
        return " | ".join(r["error"] for r in by_type[action])

    assert "shape of image data" in reasons("query.slice")
    assert "flattened image" in reasons("query.flat")
    assert "more arrays of one manifest entry" in reasons("query.split")
    assert "identifier" in reasons("query.persubject")
    assert "12 metric values for 12 subjects" in reasons("query.persubject")
    assert "one entry per subject" in reasons("query.onepersubject")
    assert "covers 3 subject(s); this site's minimum is 10" in reasons("query.few")
    assert "shape of image data" in reasons("query.patch")  # patched checks, tally: no effect
    for action in ("query.raise", "query.error", "query.readstore", "query.network"):
        assert {r["code"] for r in by_type[action]} == {4004}, by_type[action]
        assert "does not forward the app's own error text" in reasons(action)
    assert "has HU" not in reasons("query.raise") and "first" not in reasons("query.error")
    # evaluate is not in the manifest: refused before the app runs (exact tensors never leave)
    assert {r["code"] for r in by_type["evaluate"]} == {4002}
    assert "not in the app's approved egress manifest" in reasons("evaluate")
    (c_train,) = [r for r in by_type["train"] if "site-c" in r["error"]]
    assert c_train["code"] == 4003 and "other runs go on" in c_train["error"]
    subjects = {str(s) for h in federation.homes.values() for s in _subject_ids(h)}
    for home in federation.homes.values():
        entries = read_audit(home)
        text = json.dumps(entries)
        assert not any(s in text for s in subjects)  # the app's words never reach the audit
        (sandbox, *_) = read_audit(home, "federation.sandbox")
        if os.geteuid() == 0:
            assert sandbox["details"]["account"] == "insitu-federation"
            assert sandbox["details"]["network"].startswith("none")


def _subject_ids(home):
    return open_dataset(DATASET, home=home).subjects["subject_id"]


def test_a_local_process_cannot_take_a_task(federation):
    """The Runtime API refuses AcquireTask without the site's SuperExec secret."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry.retry_invoker import RetryInvoker
    from flwr.supercore.runtime import RuntimeHttpClient

    record = processes.running(federation.homes["site-a"], "site")
    # One try (Flower's own invoker signals its process to exit on a 401).
    retry = RetryInvoker(lambda: iter(()), Exception, max_tries=1, max_time=None)
    client = RuntimeHttpClient.from_server_address(
        server_address=f"127.0.0.1:{record.extra['runtime_port']}",
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=retry,
    )
    try:
        with pytest.raises(Exception) as refused:
            client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        assert "401" in repr(refused.value) or "nauthori" in repr(refused.value), refused
    finally:
        client.close()
    # No command line of this site's processes carries a task token.
    for pid in [record.pid, *descendants(record.pid)]:
        with contextlib.suppress(OSError):
            assert b"--token" not in Path(f"/proc/{pid}/cmdline").read_bytes()


# A run token: FLWR_TASK_TOKEN_LENGTH bytes as hex.
TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")


def _serverapp_processes(federation) -> dict[int, list[str]]:
    """The coordinator's ServerApp processes (Flower's, or insitu's started ahead): argv."""
    record = processes.running(federation.coordinator, "coordinator")
    found = {}
    for pid in descendants(record.pid) if record is not None else []:
        with contextlib.suppress(OSError, ValueError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            argv = [a.decode() for a in cmdline.split(b"\0") if a]
            serverapp = any(a.endswith("flwr-serverapp") for a in argv[:2])
            if serverapp or "insitu.federation.serverapp" in argv:
                found[pid] = argv
    return found


def _analyze_all(federation, **kwargs):
    return analyze(**federation.researcher(), address=federation.address, insecure=True,
                   dataset=DATASET, by="KVP", bins=BINS, min_sites=1, timeout=300,
                   **{"feature": "hu_mean", **kwargs})  # fmt: skip


def test_runs_in_a_row_get_serverapps_started_ahead_with_no_token_on_a_command_line(federation):
    """Each run's ServerApp was started (and imported) before the run: its token came on
    stdin, never on a command line (S27); one process per run, so a failed run leaves
    nothing behind for the next."""
    for site in ("site-a", "site-b"):
        approvals.approve(federation.homes[site], analytics_fingerprint(), DATASET, days=1,
                          user="sam")  # fmt: skip
    seen: dict[int, list[str]] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_serverapp_processes(federation))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    _wait(lambda: len(_serverapp_processes(federation)) == 1, "earlier runs' ServerApps to end")
    watcher.start()
    served = []
    try:
        for feature in ("hu_mean", "no_such_column", "hu_mean"):
            # One left: the one started ahead (an earlier run's may still be ending).
            _wait(lambda: len(_serverapp_processes(federation)) == 1, "a ServerApp started ahead")
            (ahead,) = _serverapp_processes(federation)
            if feature == "no_such_column":  # every site refuses: the ServerApp fails
                with pytest.raises(ServiceError, match="ended finished:failed"):
                    _analyze_all(federation, feature=feature)
            else:
                served.append(_analyze_all(federation, feature=feature))
            # The process started ahead served this run and is gone; a new one waits.
            gone = Path(f"/proc/{ahead}")
            _wait(lambda gone=gone: not gone.exists(), "the run's ServerApp to end", 60)
            assert ahead not in _serverapp_processes(federation)
    finally:
        done.set()
        watcher.join()
    first, last = served
    assert first.attrs["sites"] == last.attrs["sites"] and first.attrs["sites"]
    pd.testing.assert_frame_equal(first, last)  # the failed run changed nothing
    assert len(seen) >= 4, seen  # one per run, and the one waiting now
    for argv in seen.values():
        assert "--token" not in argv and "--token-file" not in argv, argv
        assert not any(TOKEN_PATTERN.search(a) for a in argv), argv


def test_secure_aggregation_with_local_dp_completes(federation):
    pytest.importorskip("torch")
    from insitu.federation.train_app import run_training, training_fingerprint

    fp = training_fingerprint(secagg=True)
    for home in federation.homes.values():
        approvals.approve(home, fp, DATASET, days=1, user="sam")
        set_policy(home, secure_aggregation=True, differential_privacy=True)
    try:
        outcome = run_training(
            **federation.researcher(),
            address=federation.address,
            insecure=True,
            rounds=1,
            min_sites=3,
            secagg=True,
        )
    finally:
        for home in federation.homes.values():
            set_policy(home, secure_aggregation=False, differential_privacy=False)
    assert outcome.completed, outcome.logs[-3000:]
    assert outcome.result["secagg"] is True
    # Cited like every federated result: each site, its version, its subjects (issue 17).
    result = outcome.result
    assert [c["site"] for c in result["contributions"]] == list(SITES)
    assert all(c["dataset"] and c["version"] and c["subjects"] > 0 for c in result["contributions"])
    assert sorted(c["site"] for c in result["citations"]) == list(SITES)
    files = result["citation_files"]
    assert set(files) == {"CITATIONS.cff", "CITATIONS.bib", "CITATIONS.md"}
    assert "SecAgg+" in files["CITATIONS.cff"] and "## Contributions" in files["CITATIONS.md"]
    for site in SITES:
        assert f"| {site} |" in files["CITATIONS.md"]
    for home in federation.homes.values():
        (privacy,) = read_audit(home, "federation.privacy")
        assert privacy["details"]["epsilon"] > 0 and privacy["details"]["delta"] == 1e-5
        reply = read_audit(home, "federation.reply")[-1]["details"]
        assert reply["decision"] == "allowed" and reply["kinds"]["arrays"] > 0
        # SecAgg+ stages (keys, shares, masked vectors, unmasking) all left as audited sends.
        assert len(read_audit(home, "federation.send")) >= 4


def test_training_goes_on_when_a_site_drops_and_takes_it_back(federation):
    pytest.importorskip("torch")
    from insitu.federation.train_app import run_training, training_fingerprint

    fp = training_fingerprint()
    for home in federation.homes.values():
        approvals.approve(home, fp, DATASET, days=1, user="sam")
    site_a, site_c = federation.homes["site-a"], federation.homes["site-c"]
    runs_a = len(read_audit(site_a, "federation.run"))
    replies_a = len(read_audit(site_a, "federation.reply"))
    outcome: dict = {}

    def train() -> None:
        outcome["run"] = run_training(
            **federation.researcher(),
            address=federation.address,
            insecure=True,
            rounds=3,
            min_sites=2,
            wait_for_sites=3,
            round_timeout=240,
            lr=0.005,
            timeout=900,
        )

    log = federation.coordinator.run / "federation-coordinator.log"
    worker = threading.Thread(target=train)
    worker.start()
    try:
        # Round 2 has started at site-a: site-c answered round 1; now it drops out ...
        _wait(lambda: len(read_audit(site_a, "federation.run")) >= runs_a + 2, "round 2", log=log)
        processes.stop(site_c)
        # ... the round finishes with site-a and site-b, and site-c comes back for round 3.
        _wait(lambda: len(read_audit(site_a, "federation.reply")) >= replies_a + 2, "2", log=log)
        federation.restart_site("site-c")
    finally:
        worker.join(timeout=900)
    run = outcome["run"]
    assert run.completed, run.logs[-3000:]
    rounds = run.result["rounds"]
    assert rounds[0]["sites"] == list(SITES)
    assert rounds[1]["sites"] == ["site-a", "site-b"]
    assert any("site-c" in p for p in rounds[1]["problems"])
    assert "site-c" in rounds[2]["sites"]
    assert len(run.result["weights"]) == 6  # conv, conv, linear: weights and biases
    # Every site that trained is cited, with the subjects it contributed (issue 17).
    assert [c["site"] for c in run.result["contributions"]] == list(SITES)
    assert all(c["subjects"] > 0 for c in run.result["contributions"])
    assert "CITATIONS.cff" in run.result["citation_files"]


def test_a_spent_budget_refuses_a_researcher_others_go_on_and_a_restart_keeps_it(federation):
    """The per-researcher, per-dataset ledger on a live site: bob's repeated runs are refused
    once his budget at site-b is spent (code 4007, audited naming him), carol still runs,
    and after the SuperNode restarts the ledger still refuses bob."""
    from fixtures_federation import approve_researcher, set_federation

    from insitu.errors import ServiceError
    from insitu.federation.control_auth import issue_token
    from insitu.federation.ledger import Ledger

    site_b = federation.homes["site-b"]
    approvals.approve(site_b, analytics_fingerprint(), DATASET, days=1, user="sam")
    for name in ("bob", "carol"):  # researchers of site-b, approved only there
        approve_researcher(site_b, name)
        federation.tokens[name] = issue_token(federation.coordinator, name)
    ask = {"address": federation.address, "insecure": True, "dataset": DATASET,
           "feature": "hu_mean", "min_sites": 1, "timeout": 300}  # fmt: skip

    def run(name: str) -> pd.DataFrame:
        return analyze(**federation.researcher(name, home="site-b"), **ask)

    assert run("bob").attrs["sites"] == ["site-b"]
    used = Ledger.for_home(site_b).spent("bob@site-b", DATASET).values
    assert used > 0
    spent = r"budget of bob@site-b for dataset 'locat' at this site is exhausted"
    set_federation(site_b, values_budget=used + used // 2)  # room for half a reply more
    try:
        with pytest.raises(ServiceError, match=spent + r".*values already used, this reply"):
            run("bob")
        assert run("carol").attrs["sites"] == ["site-b"]  # her own budget
        processes.stop(site_b)
        federation.restart_site("site-b")
        # Nothing left now: refused before the app runs. Without the ledger on disk the
        # restarted site would have let a whole reply out.
        set_federation(site_b, values_budget=used)
        replies = len(read_audit(site_b, "federation.reply"))
        with pytest.raises(ServiceError, match=spent + rf": {used} of {used} numeric values"):
            run("bob")
        assert len(read_audit(site_b, "federation.reply")) == replies
    finally:
        set_federation(site_b, values_budget=100_000)
    refusals = read_audit(site_b, "federation.budget")
    assert [(e["user"], e["details"]["decision"]) for e in refusals] == [
        ("bob@site-b", "refused"), ("bob@site-b", "refused"),
    ]  # fmt: skip
    assert Ledger.for_home(site_b).spent("bob@site-b", DATASET).values == used


def test_coordinator_restart_keeps_site_state(federation, capsys):
    before = {site: AuditLog(home).verify().entries for site, home in federation.homes.items()}
    assert main(["--home", str(federation.coordinator.root), "federation", "stop"]) == 0
    assert "stopped coordinator" in capsys.readouterr().out
    processes.start_coordinator(federation.coordinator, federation.address, insecure=True)
    for site, home in federation.homes.items():
        assert AuditLog(home).verify().entries == before[site]
        assert processes.running(home, "site") is not None  # SuperNodes waited and reconnect
    site_c = federation.homes["site-c"]
    approvals.approve(site_c, analytics_fingerprint(), DATASET, days=1, user="sam")
    # An image feature grouped by the arm from each site's ingested measurement table.
    result = analyze(
        **federation.researcher(),
        address=federation.address,
        insecure=True,
        dataset=DATASET,
        feature="hu_mean",
        by="arm",
        bins=BINS,
        min_sites=3,
        timeout=300,
    )
    assert result.attrs["sites"] == list(SITES)
    assert set(result["arm"]) == {"low-dose", "standard-dose"}
    _check_against_pooled(result, _pooled(federation.homes.values(), "hu_mean", "arm"), "arm")


def _wait(condition, what: str, timeout: float = 240.0, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)
