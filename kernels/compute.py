"""``insitu.compute``: a dask cluster at the site, from a notebook.

The hub puts dask-gateway's address (``DASK_GATEWAY__ADDRESS``, ...) and the
researcher's token into the server's environment, so no URL or token appears
in a notebook. The kernel's token goes to the cluster as the ``gate_token``
option: the workers read stores through the gate as the researcher, so the
gate's access check and audit apply to every chunk a worker reads. The
cluster shuts down with the kernel (and after the gateway's idle timeout).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from insitu.errors import PolicyViolationError, ServiceError

__all__ = ["compute"]

TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 (a variable name)
ADDRESS_ENV = "DASK_GATEWAY__ADDRESS"


def compute(workers: int = 2, *, timeout: float = 180) -> Any:
    """A ``distributed.Client`` on a new gateway cluster with ``workers`` workers.

    Raises :class:`~insitu.errors.PolicyViolationError` when the site allows
    fewer workers (insitu.toml ``[compute] max_workers``).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, not {workers!r}")
    token = os.environ.get(TOKEN_ENV, "")
    if not token or not os.environ.get(ADDRESS_ENV):
        raise ServiceError(
            "no dask-gateway here: insitu.compute works in a notebook server of the site's "
            f"hub (which sets {ADDRESS_ENV} and {TOKEN_ENV})"
        )
    import dask.config
    from dask_gateway import Gateway
    from dask_gateway.client import GatewayWarning

    # dask reads DASK_* variables at import; refresh in case they changed since.
    dask.config.refresh()
    gateway = Gateway()
    try:
        cluster = gateway.new_cluster(gate_token=token, shutdown_on_close=True)
    except Exception as exc:
        raise ServiceError(f"the site's dask-gateway refused a new cluster: {exc}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GatewayWarning)
        cluster.scale(workers)
    limits = [str(w.message) for w in caught if issubclass(w.category, GatewayWarning)]
    if limits:
        cluster.shutdown()
        raise PolicyViolationError(
            f"asked for {workers} workers, more than this site allows: {limits[0]} "
            "(insitu.toml [compute] max_workers)"
        )
    client = cluster.get_client()
    try:
        client.wait_for_workers(workers, timeout=timeout)
    except (TimeoutError, OSError) as exc:
        client.close()
        cluster.shutdown()
        raise ServiceError(
            f"the cluster did not get {workers} workers within {timeout:.0f} s: {exc}"
        ) from None
    return client
