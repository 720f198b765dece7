"""Settings of a researcher's single-user server: the enclave.

What a researcher's browser can pull out of their server is narrowed to what
it displays: the raw-file route (``/files/``), the nbconvert export route
(``/nbconvert/``) and the HTML file view (``/view/``) answer 403, the
contents API refuses binary file content (images, arrays, weights, archives),
and terminals are off. Data reaches the server only through the gate (no store
path is mounted or named in its environment), and results leave only through
the airlock. docs/security.md lists what remains (what the browser shows).

The hub applies these with :func:`server_args` (added to ``Spawner.args``)
after :func:`prepare` installed the ``insitu`` kernel spec.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web
from traitlets import default

__all__ = [
    "EnclaveContentsManager",
    "RefusedHandler",
    "default_handlers",
    "prepare",
    "server_args",
]

REFUSAL = (
    "downloads are switched off in this enclave: results leave the site through the airlock "
    "(insitu.release(obj, purpose=...))"
)


class RefusedHandler(web.RequestHandler):
    """Answers every request with 403 and says how results leave instead."""

    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "application/json")
        self.finish({"message": REFUSAL})

    def check_xsrf_cookie(self) -> None:
        return  # nothing to protect: every method is refused


# Loaded through ServerApp.extra_services, which come before the default
# services, so these shadow jupyter_server's own /files, /nbconvert and /view.
default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/files/.*", RefusedHandler),
    (r"/nbconvert/.*", RefusedHandler),
    (r"/view/.*", RefusedHandler),
]


class EnclaveContentsManager(AsyncLargeFileManager):
    """The usual contents manager, minus raw files and binary content."""

    @default("files_handler_class")
    def _refuse_files(self) -> type[web.RequestHandler]:
        return RefusedHandler

    @default("files_handler_params")
    def _no_params(self) -> dict[str, Any]:
        return {}

    async def get(
        self,
        path: str,
        content: bool = True,
        type: str | None = None,
        format: str | None = None,
        require_hash: bool = False,
    ) -> dict[str, Any]:
        # jupyter_server's contents managers carry no type hints.
        model: dict[str, Any] = await super().get(  # type: ignore[no-untyped-call]
            path, content=content, type=type, format=format, require_hash=require_hash
        )
        if content and model.get("type") == "file" and model.get("format") == "base64":
            raise web.HTTPError(403, f"{path}: binary files cannot be opened here; " + REFUSAL)
        return model


# JupyterLab settings every researcher's server starts with: an enclave is offline, so
# no "official Jupyter news?" question, no news feed and no update check.
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}
}


def lab_settings_dir(prefix: str | None = None) -> Path:
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "insitu-lab-settings"


def write_lab_settings(folder: Path) -> Path:
    """``folder/overrides.json`` with :data:`LAB_OVERRIDES` (replaced atomically)."""
    import json
    import os

    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(LAB_OVERRIDES, indent=2) + "\n"
    target = folder / "overrides.json"
    if not target.exists() or target.read_text() != text:
        partial = folder / f".overrides.json.{os.getpid()}"
        partial.write_text(text)
        partial.replace(target)
    return folder


def server_args(lab_settings: Path | None = None) -> list[str]:
    """Command-line settings for the single-user server (``Spawner.args``).

    One kernel in the launcher, the site's (the default ``python3`` spec is hidden), and
    JupyterLab's news and update checks off (:data:`LAB_OVERRIDES` in ``lab_settings``,
    default :func:`lab_settings_dir`).
    """
    return [
        f"--ServerApp.contents_manager_class={__name__}.EnclaveContentsManager",
        f"--ServerApp.extra_services={__name__}",
        "--ServerApp.terminals_enabled=False",
        "--MappingKernelManager.default_kernel_name=insitu",
        "--KernelSpecManager.ensure_native_kernel=False",
        "--KernelSpecManager.allowed_kernelspecs=insitu",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.app_settings_dir={lab_settings or lab_settings_dir()}",
    ]


def prepare(prefix: str | None = None) -> str:
    """Install the ``insitu`` kernel spec where user servers find it (default: sys.prefix),
    and the enclave's JupyterLab settings (:func:`lab_settings_dir`).

    Written in place (atomically) rather than with jupyter_client's installer,
    which deletes and copies the folder and so races when hubs start together.
    """
    from insitu.kernels.kernelspec import write_kernelspec

    write_lab_settings(lab_settings_dir(prefix))
    return str(write_kernelspec(Path(prefix or sys.prefix) / "share" / "jupyter"))
