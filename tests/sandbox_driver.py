"""Run ClientApp calls through the site runner's ``AppCall`` (sandbox + checker), in a
process of its own that, like the site runner, is a child subreaper.

    python tests/sandbox_driver.py < spec.json    # one JSON line per call on stdout

spec: ``{"home", "dataset", "site", "fab" (path), "researcher", "calls": [{"type",
"federation": {...}, "run_config": {...}}]}``; each call gets the node's config with
``[federation]`` replaced by its own settings. No SuperLink or SuperNode: the task
comes from here, everything after it is the site's code.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def _message(message_type: str, run_id: int) -> Any:
    from flwr.app import Message, Metadata, RecordDict

    metadata = Metadata(
        run_id=run_id,
        message_id=f"test-{message_type}",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(RecordDict(), metadata=metadata)


def _outcome(reply: Any) -> dict[str, Any]:
    if reply.has_error():
        return {"code": int(reply.error.code), "reason": str(reply.error.reason)}
    metrics = {
        f"{name}/{key}": value
        for name, record in reply.content.metric_records.items()
        for key, value in record.items()
    }
    return {"code": None, "metrics": metrics}


def main() -> int:
    from flwr.app import Context, RecordDict
    from flwr.supercore.fab import Fab
    from flwr.supercore.run import Run

    from insitu.config import NodeHome, load_config
    from insitu.federation import node_data
    from insitu.federation.manifest import manifest_from_fab
    from insitu.federation.sandbox_launch import become_subreaper
    from insitu.federation.site_mod import SiteRun
    from insitu.federation.site_runner import AppCall

    spec = json.load(sys.stdin)
    become_subreaper()
    home = NodeHome(Path(spec["home"]))
    content = Path(spec["fab"]).read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    fab = Fab(hash_str=digest, content=content, verifications={})
    flwr_run = replace(Run.create_empty(7), fab_id=spec["fab_id"], fab_version="1.0.0")
    run = SiteRun(
        home=home,
        site=spec["site"],
        dataset=spec["dataset"],
        fingerprint=digest,
        app=f"{spec['fab_id']}==1.0.0",
        run_id=7,
        researcher=spec["researcher"],
    )
    node_data.set_run(node_data.RunBinding(home, spec["researcher"], "7"))
    node_config = {
        node_data.NODE_CONFIG_HOME: str(home.root),
        node_data.NODE_CONFIG_DATASET: spec["dataset"],
        node_data.NODE_CONFIG_SITE: spec["site"],
    }
    base = load_config(home)
    for call in spec["calls"]:
        config = replace(base, extra=base.extra | {"federation": call.get("federation", {})})
        app = AppCall(
            run=run, config=config, fab=fab, flwr_run=flwr_run, manifest=manifest_from_fab(content)
        )
        context = Context(
            run_id=7,
            node_id=1,
            node_config=node_config,
            state=RecordDict(),
            run_config=call.get("run_config", {}),
        )
        reply = app(_message(call["type"], 7), context)
        outcome = {"type": call["type"], "isolation": app.isolation, **_outcome(reply)}
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
