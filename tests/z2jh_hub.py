"""The chart's hub configuration, loaded as the hub pod loads it, without a cluster.

Zero to JupyterHub's hub runs ``jupyterhub_config.py`` from its ConfigMap
"hub"; that file reads the chart's values and generated tokens from the
Secret "hub" (mounted at /usr/local/etc/jupyterhub/secret) and the resource
names from the ConfigMap (…/config), sets KubeSpawner and the services, and
finally runs every ``hub.extraConfig`` (insitu's: ``configure(c,
"/var/lib/insitu")``). :func:`load_hub_config` runs exactly those rendered
files into a traitlets ``Config``, with three mechanical changes, each
asserted to apply once: the mount point is a temporary folder, the node home
is a local one, and two lines that need what only the hub image has are left
out (pycurl for tornado's curl client; kubernetes_asyncio's ``client``, used
only for the iptables init container the chart switches off).
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helm_render import by_kind

MOUNT = "/usr/local/etc/jupyterhub"
POD_HOME = "/var/lib/insitu"
_WITHOUT = {
    'AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")': "pass",
    "from kubernetes_asyncio import client\n": "client = None  # only for blockWithIptables\n",
}


def _once(text: str, old: str, new: str, where: str) -> str:
    assert text.count(old) == 1, f"{where}: expected {old!r} once"
    return text.replace(old, new)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def service_environment(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The <NAME>_SERVICE_HOST/_PORT variables Kubernetes gives every pod."""
    env = {}
    for name, service in by_kind(objects, "Service").items():
        key = name.upper().replace("-", "_")
        env[f"{key}_SERVICE_HOST"] = "10.0.0.1"
        env[f"{key}_SERVICE_PORT"] = str(service["spec"]["ports"][0]["port"])
    return env


def load_hub_config(objects: list[dict[str, Any]], folder: Path, home_root: Path) -> Any:
    """The hub's ``c`` after z2jh's jupyterhub_config.py and every extraConfig ran."""
    from traitlets.config import Config

    config_map = by_kind(objects, "ConfigMap")["hub"]["data"]
    secret = by_kind(objects, "Secret")["hub"]["data"]
    mount = folder / "etc-jupyterhub"
    for sub, files in (
        ("config", config_map),
        ("secret", {k: base64.b64decode(v).decode() for k, v in secret.items()}),
    ):
        (mount / sub).mkdir(parents=True)
        for key, text in files.items():
            if sub == "secret" and key == "values.yaml":
                text = text.replace(POD_HOME, str(home_root))
            (mount / sub / key).write_text(text)
    code_dir = folder / "hub"
    code_dir.mkdir()
    z2jh = _once(config_map["z2jh.py"], f'f"{MOUNT}/{{source}}"', f'f"{mount}/{{source}}"', "z2jh")
    z2jh = z2jh.replace(MOUNT, str(mount))
    (code_dir / "z2jh.py").write_text(z2jh)
    code = config_map["jupyterhub_config.py"].replace(MOUNT, str(mount))
    for old, new in _WITHOUT.items():
        code = _once(code, old, new, "jupyterhub_config.py")
    path = code_dir / "jupyterhub_config.py"
    path.write_text(code)
    c = Config()
    env = service_environment(objects) | {"POD_NAMESPACE": "insitu"}
    try:
        with _environment(env):
            exec(  # noqa: S102 (the chart's own rendered hub configuration)
                compile(code, str(path), "exec"),
                {"c": c, "get_config": lambda: c, "__file__": str(path), "__name__": "config"},
            )
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_dir))
        sys.modules.pop("z2jh", None)
    return c
