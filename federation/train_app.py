"""The shipped federated-training app: FedAvg / FedProx of the CNN in train_cnn.

Two ServerApps share one ClientApp module:

- ``server`` (Message API): rounds of ``train`` messages to every connected
  site, aggregation weighted by each site's example count (FedAvg, FedProx
  with ``proximal-mu`` > 0). A round goes on without a site that dropped or
  refused as long as ``min-sites`` answered; otherwise the run fails naming
  the sites that did not answer. A site that rejoins is used again from the
  next round (each round first waits, up to the round timeout, until
  ``wait-for-sites`` sites are online). The result (per-round sites, losses, final weights) is
  reported with :func:`insitu.federation.apps.report_result`.
- ``secagg_server`` (Flower's legacy API, the only one with SecAgg+):
  ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with a legacy
  FedAvg; sites that turned on ``policy.secure_aggregation`` run
  ``secaggplus_mod``, so the coordinator only ever sees the masked sum.

Sites must have torch installed (the ``torch`` extra) to run this app.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from insitu.federation.analytic import Analytic
from insitu.federation.app_package import AppPackage, entry_module

__all__ = ["run_training", "training_fab", "training_fingerprint"]

APP_NAME = "insitu-train-cnn"
APP_VERSION = "1.0.0"


# --- the site's side ------------------------------------------------------


def _site_name(context: Any) -> str:
    from pathlib import Path

    from insitu.config import NodeHome, load_config
    from insitu.federation.node_data import NODE_CONFIG_HOME

    return load_config(NodeHome(Path(str(context.node_config[NODE_CONFIG_HOME])))).site.name


def _local_fit(context: Any, weights: Sequence[np.ndarray], config: Mapping[str, Any]) -> Any:
    from insitu.federation.node_data import site_data
    from insitu.federation.train_cnn import get_weights, load_slices, make_model, set_weights
    from insitu.federation.train_cnn import train_epochs as fit

    data = load_slices(site_data(context), int(config.get("slices-per-subject", 8)))
    model = make_model()
    set_weights(model, weights)
    loss = fit(
        model,
        data,
        epochs=int(config.get("local-epochs", 1)),
        lr=float(config.get("lr", 0.005)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=int(config.get("round", 0)),
    )
    return get_weights(model), len(data), loss


def client_app() -> Any:
    """Message-API ClientApp (train) plus the legacy client for the SecAgg+ server."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        arrays = msg.content.array_records["arrays"]
        config = dict(msg.content["config"]) if "config" in msg.content else {}
        config.update(context.run_config)
        weights, n, loss = _local_fit(context, arrays.to_numpy_ndarrays(), config)
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord(weights, keep_input=True),
                    "metrics": MetricRecord({"num-examples": n, "train-loss": loss}),
                }
            ),
            reply_to=msg,
        )

    return app


def legacy_client_app() -> Any:
    """The same training as a legacy NumPyClient (SecAgg+ needs the legacy protocol)."""
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp

    class Client(NumPyClient):
        def __init__(self, context: Any) -> None:
            self.context = context

        def fit(self, parameters: Any, config: Any) -> Any:
            cfg = dict(self.context.run_config) | dict(config)
            weights, n, loss = _local_fit(self.context, parameters, cfg)
            return weights, n, {"train-loss": float(loss)}

    return ClientApp(client_fn=lambda context: Client(context).to_client())


# --- the coordinator's side -----------------------------------------------


def _weighted_average(parts: Sequence[tuple[Sequence[np.ndarray], int]]) -> list[np.ndarray]:
    total = sum(n for _, n in parts)
    return [
        np.asarray(sum(np.asarray(w[i], dtype=np.float64) * n for w, n in parts) / total)
        for i in range(len(parts[0][0]))
    ]


def _reply_site(reply: Any) -> str | None:
    for record in reply.content.metric_records.values():
        for key in record:
            if key.startswith("site:"):
                return str(key).split(":", 1)[1]
    return None


def server_app() -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
    from flwr.serverapp import Grid, ServerApp

    from insitu.federation.apps import report_result, send_and_collect
    from insitu.federation.credit import fold, read_credit
    from insitu.federation.train_cnn import get_weights, make_model

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        cfg = context.run_config
        rounds = int(cfg["num-rounds"])
        min_sites = int(cfg["min-sites"])
        timeout = float(cfg["round-timeout"])
        title = f"Federated training of the insitu example CNN ({rounds} rounds)"
        weights = [w.astype(np.float32) for w in get_weights(make_model())]
        names: dict[int, str] = {}
        history: list[dict[str, Any]] = []
        credits: list[dict[str, Any] | None] = []  # each site's citation and subjects
        for rnd in range(1, rounds + 1):
            nodes = _nodes(grid, max(min_sites, int(cfg["wait-for-sites"])), timeout)
            config = ConfigRecord(
                {
                    "round": rnd,
                    "lr": float(cfg["lr"]),
                    "local-epochs": int(cfg["local-epochs"]),
                    "proximal-mu": float(cfg["proximal-mu"]),
                }
            )
            messages = [
                Message(
                    RecordDict({"arrays": ArrayRecord(weights), "config": config}),
                    dst_node_id=node,
                    message_type="train",
                    group_id=str(rnd),
                )
                for node in nodes
            ]
            replies = send_and_collect(grid, messages, timeout=timeout)
            parts, losses, answered, problems = [], [], [], []
            for reply in replies:
                node = reply.metadata.src_node_id
                if reply.has_error():
                    problems.append(f"{names.get(node, f'node {node}')}: {reply.error.reason}")
                    continue
                site = _reply_site(reply) or f"node {node}"
                names[node] = site
                n = int(reply.content["metrics"]["num-examples"])
                parts.append((reply.content["arrays"].to_numpy_ndarrays(), n))
                losses.append((float(reply.content["metrics"]["train-loss"]), n))
                answered.append(site)
                credits.append(read_credit(reply.content))
            got = {r.metadata.src_node_id for r in replies}
            dropped = sorted(names.get(n, f"node {n}") for n in nodes if n not in got)
            problems += [f"{site}: no reply (left the federation or timed out)" for site in dropped]
            history.append(
                {
                    "round": rnd,
                    "sites": sorted(answered),
                    "problems": problems,
                    "train_loss": sum(v * n for v, n in losses) / max(sum(n for _, n in losses), 1),
                    "examples": sum(n for _, n in losses),
                }
            )
            print(f"INSITU-ROUND {rnd}: sites {sorted(answered)}; {problems}", flush=True)
            if len(parts) < min_sites:
                report_result({"rounds": history, "weights": None, **fold(credits, title=title)})
                raise RuntimeError(
                    f"round {rnd}: {len(parts)} site(s) answered, the run needs {min_sites}; "
                    f"missing: {'; '.join(problems) or 'none connected'}"
                )
            weights = [w.astype(np.float32) for w in _weighted_average(parts)]
        final = [w.tolist() for w in weights]
        report_result({"rounds": history, "weights": final, **fold(credits, title=title)})

    return app


def _nodes(grid: Any, minimum: int, timeout: float) -> list[int]:
    from insitu.federation.apps import online_nodes

    deadline = time.monotonic() + timeout
    while True:
        nodes = online_nodes(grid)
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


def secagg_server_app() -> Any:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import Grid, ServerApp

    from insitu.federation.apps import report_result
    from insitu.federation.credit import CreditGrid, fold
    from insitu.federation.train_cnn import get_weights, make_model

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        cfg = context.run_config
        sites = int(cfg["min-sites"])
        rounds = int(cfg["num-rounds"])
        title = f"Federated training of the insitu example CNN ({rounds} rounds, SecAgg+)"
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=sites,
            min_available_clients=sites,
            initial_parameters=ndarrays_to_parameters(get_weights(make_model())),
        )
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(num_rounds=rounds),
            strategy=strategy,
        )
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=sites, reconstruction_threshold=max(2, sites - 1)
            )
        )
        # The sites' replies pass through the workflow; their credit is kept on the way.
        credited = CreditGrid(grid)
        workflow(cast("Grid", credited), legacy)  # a Grid by delegation (no isinstance check)
        losses = legacy.history.losses_distributed
        report_result(
            {
                "secagg": True,
                "rounds": rounds,
                "losses": [list(x) for x in losses],
                **fold(credited.credits, title=title),
            }
        )

    return app


# --- the FABs -------------------------------------------------------------


def _package(name: str, module: str, entry: str) -> AppPackage:
    return AppPackage(
        name=name,
        version=APP_VERSION,
        description="insitu example: federated CNN on CT slices (upper vs lower abdomen)",
        dependencies=("flwr>=1.42", "insitu[torch]"),
        module=module,
        entry=entry,
        config=_CONFIG,
        egress=_egress(name),
    )


_CONFIG = """\
num-rounds = 3
min-sites = 2
wait-for-sites = 0
round-timeout = 120.0
lr = 0.005
local-epochs = 1
proximal-mu = 0.0
slices-per-subject = 8
# The researcher's identity, signed by their home site (insitu.federation.identity).
insitu-identity = ""
"""


# The demo CNN's parameters (train_cnn.make_model), in state-dict order.
_CNN_SHAPES = ([8, 1, 3, 3], [8], [16, 8, 3, 3], [16], [2, 256], [2])


def _egress(name: str) -> str:
    """The egress manifest a steward approves with the app (docs/federation.md)."""
    record, metrics = ("arrays", '["metrics/num-examples", "metrics/train-loss"]')
    if name.endswith("-secagg"):
        record = "fitres.parameters"
        metrics = '["fitres.num_examples/num_examples", "fitres.metrics/train-loss"]'
    arrays = "".join(
        f"""
[[tool.insitu.egress.arrays]]
name = "{record}/{i}"
dtype = "float32"
shape = {shape}
"""
        for i, shape in enumerate(_CNN_SHAPES)
    )
    return f"""
[tool.insitu.egress]
message-types = ["train"]
max-replies = 100
max-values-per-reply = 10000
max-values-per-run = 1000000
metrics = {metrics}
{arrays}"""


_MODULE = entry_module(
    "insitu example app (the code is insitu.federation.train_app).", "insitu.federation.train_app"
)
_SECAGG_MODULE = entry_module(
    "insitu example app with SecAgg+ (the code is insitu.federation.train_app).",
    "insitu.federation.train_app",
    client="legacy_client_app",
    server="secagg_server_app",
)


ANALYTIC = Analytic(
    _package(APP_NAME, "insitu_train_app", _MODULE),
    about="example: a CNN trained across sites (FedAvg/FedProx)",
)
SECAGG_ANALYTIC = Analytic(
    _package(APP_NAME + "-secagg", "insitu_train_secagg", _SECAGG_MODULE),
    about="example: the CNN with SecAgg+ and local differential privacy",
)


def training_fab(*, secagg: bool = False) -> bytes:
    return (SECAGG_ANALYTIC if secagg else ANALYTIC).fab()


def training_fingerprint(*, secagg: bool = False) -> str:
    return (SECAGG_ANALYTIC if secagg else ANALYTIC).fingerprint()


def run_training(
    *,
    federation: str | None = None,
    address: str | None = None,
    insecure: bool = False,
    rounds: int = 3,
    min_sites: int = 2,
    wait_for_sites: int = 0,
    lr: float = 0.005,
    local_epochs: int = 1,
    proximal_mu: float = 0.0,
    round_timeout: float = 120.0,
    secagg: bool = False,
    timeout: float = 1800.0,
    identity: Any = None,
    token: str | None = None,
) -> Any:
    """Train the example CNN across a federation; returns the RunOutcome.

    Its ``result`` dict holds ``rounds``, ``weights`` and what to cite:
    ``citations``, ``contributions`` (site, dataset, version, subjects) and
    ``citation_files`` (CITATIONS.cff, .bib, .md), also with ``secagg``.
    """
    from insitu.federation.apps import run_fab

    config: dict[str, Any] = {"num-rounds": rounds, "min-sites": min_sites}
    if not secagg:
        config |= {
            "round-timeout": float(round_timeout),
            "wait-for-sites": int(wait_for_sites),
            "lr": float(lr),
            "local-epochs": int(local_epochs),
            "proximal-mu": float(proximal_mu),
        }
    return run_fab(
        training_fab(secagg=secagg),
        federation=federation,
        address=address,
        insecure=insecure,
        run_config=config,
        timeout=timeout,
        identity=identity,
        token=token,
    )
