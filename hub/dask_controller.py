"""dask-gateway's Kubernetes controller, plus one NetworkPolicy per researcher's cluster.

The Helm chart runs this instead of ``dask-gateway-server kube-controller``
(same configuration file, same flags). Before it creates a cluster's
scheduler it creates :func:`cluster_network_policy`: the cluster's pods
(labelled by dask-gateway with ``gateway.dask.org/cluster: <name>``) accept
connections from pods of the same cluster. The chart's own policy lets dask
pods accept connections only from dask-gateway's proxy and API otherwise, so
one researcher's workers cannot reach another's scheduler, workers or
dashboards. The policy is owned by the DaskCluster object, so Kubernetes
deletes it with the cluster.

A NetworkPolicy cannot say "the same value of a label as mine", hence one
policy per cluster, created by the component that creates the cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["CLUSTER_LABEL", "INSTANCE_LABEL", "cluster_network_policy", "main"]

CLUSTER_LABEL = "gateway.dask.org/cluster"
INSTANCE_LABEL = "gateway.dask.org/instance"


def cluster_network_policy(cluster: dict[str, Any], instance: str) -> dict[str, Any]:
    """The NetworkPolicy letting one DaskCluster's pods reach each other (and no one else's)."""
    meta = cluster["metadata"]
    name = meta["name"]
    selector = {INSTANCE_LABEL: instance, CLUSTER_LABEL: name}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"dask-cluster-{name}"[:63].rstrip("-."),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/name": "dask-gateway",
                "app.kubernetes.io/component": "cluster-isolation",
                **selector,
            },
            "ownerReferences": [
                {
                    "apiVersion": cluster["apiVersion"],
                    "kind": cluster["kind"],
                    "name": name,
                    "uid": meta["uid"],
                }
            ],
        },
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": selector}}]}],
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the controller (``--config <dask_gateway_config.py>``, as upstream's)."""
    try:
        from dask_gateway_server.backends.kubernetes.controller import KubeController
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.rest import ApiException
        from kubernetes_asyncio.config import ConfigException
    except ImportError as exc:
        print(
            f"insitu dask controller: dask-gateway-server's Kubernetes backend is not installed "
            f"({exc.name}): install dask-gateway-server[kubernetes] (the node image has it)",
            file=sys.stderr,
        )
        return 2

    class InsituKubeController(KubeController):  # type: ignore[misc]
        name = "insitu-dask-controller"

        async def setup(self) -> None:
            try:
                await super().setup()
            except ConfigException as exc:
                # Outside a cluster (no service account, no kubeconfig): one clear line.
                print(
                    f"insitu dask controller: no Kubernetes cluster to control ({exc}): it "
                    "runs in the chart's controller pod, with that pod's service account",
                    file=sys.stderr,
                )
                sys.exit(3)

        async def create_scheduler_pod_if_not_exists(self, cluster: dict[str, Any]) -> Any:
            policy = cluster_network_policy(cluster, self.gateway_instance)
            api = client.NetworkingV1Api(api_client=self.api_client)
            try:
                namespace = policy["metadata"]["namespace"]
                await api.create_namespaced_network_policy(namespace, policy)  # type: ignore[arg-type]
            except ApiException as exc:
                if exc.status != 409:  # 409: it exists (a retry of the same cluster)
                    raise
            return await super().create_scheduler_pod_if_not_exists(cluster)

    InsituKubeController.launch_instance(list(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
