"""Run one ClientApp task at a site: approval first, then the app inside the site's mods.

This is insitu's replacement for ``flwr-clientapp`` (started by
:mod:`insitu.federation.site_exec`, never by the app). For one task it:

1. pulls the message, context, run and FAB from the SuperNode's Runtime API;
2. fingerprints the FAB bytes itself (SHA-256) and checks the steward's
   approval for the node's dataset; without one it sends an error reply
   naming the reason, records the app as pending and audits the refusal:
   the app is not installed, no data is opened;
3. otherwise installs the FAB (no dependency installation: sites are
   offline), loads its ClientApp and calls it wrapped in the site's mods,
   with the node's dataset opened from the node home;
4. pushes the reply and the task's final status back to the SuperNode.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _handle(message: Any, context: Any, run: Any, fab: Any) -> Any:
    """The reply for one task (an error reply when the site refuses)."""
    from flwr.app import Error, Message
    from flwr.cli.install import install_from_fab
    from flwr.client.mod.utils import make_ffn
    from flwr.clientapp.utils import get_load_client_app_fn

    from insitu.config import NodeHome, load_config
    from insitu.errors import AppNotApprovedError, InsituError
    from insitu.federation import approvals, node_data
    from insitu.federation.site_mod import (
        ERROR_NOT_APPROVED,
        ERROR_SITE_FAILURE,
        SiteRun,
        site_mods,
    )

    node_config = dict(context.node_config)
    home = NodeHome(Path(str(node_config[node_data.NODE_CONFIG_HOME])))
    config = load_config(home)
    dataset = str(node_config[node_data.NODE_CONFIG_DATASET])
    fingerprint = hashlib.sha256(fab.content).hexdigest()
    run_info = SiteRun(
        home=home,
        site=config.site.name,
        dataset=dataset,
        fingerprint=fingerprint,
        app=f"{run.fab_id}=={run.fab_version}",
        run_id=int(run.run_id),
    )
    try:
        approval = approvals.check(home, fingerprint, dataset)
    except AppNotApprovedError as refused:
        reason = f"site {config.site.name!r} refused the run: {refused}"
        approvals.record_refusal(
            home, fingerprint, dataset, app=run_info.app, run_id=run_info.run_id, reason=reason
        )
        run_info.audit(
            "federation.refuse", message_type=message.metadata.message_type, reason=str(refused)
        )
        return Message(Error(code=ERROR_NOT_APPROVED, reason=reason), reply_to=message)

    # Who the run works for, for the analytics' differencing ledger (the researcher's
    # verified identity once runs carry one).
    node_data.set_run(node_data.RunBinding(home, "anonymous", str(run.run_id)))
    run_info.audit(
        "federation.run",
        message_type=message.metadata.message_type,
        approved_by=approval.approved_by,
        expires_at=approval.expires_at,
    )
    try:
        install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        client_app = load(run.fab_id, run.fab_version, fab.hash_str)
        node_data.set_current(None)  # opened on first use, from the node home only
        delta = float(config.extra.get("federation", {}).get("dp_delta", 1e-5))
        call = make_ffn(client_app, site_mods(run_info, config.policy, dp_delta=delta))
        return call(message, context)
    except InsituError as exc:
        # Our own errors are safe to show (dataset missing, bad node config).
        run_info.audit("federation.reply", decision="error", reason=str(exc), size_bytes=0)
        return Message(
            Error(code=ERROR_SITE_FAILURE, reason=f"site {config.site.name!r}: {exc}"),
            reply_to=message,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="insitu site runner (one ClientApp task)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=validate_and_resolve_root_certificates(
            args.root_certificates, args.insecure
        ),
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(args.token),
        ],
        retry_invoker=retry,
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    sub_status, details, code = SubStatus.FAILED, "site runner failed", 1
    try:
        message, context, run, fab = pull_task_input(client)
        try:
            reply = _handle(message, context, run, fab)
            sub_status, details, code = SubStatus.COMPLETED, "", 0
        except Exception as exc:
            # The app's own failure: report its type only (its text may hold data).
            reply = Message(
                Error(
                    code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    reason=f"the ClientApp raised {type(exc).__name__} at the site",
                ),
                reply_to=message,
            )
            details = f"ClientApp raised {type(exc).__name__}"
            import traceback

            traceback.print_exc()
        push_message(client, reply, context)
    finally:
        retry.max_tries = 1
        push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
