"""The app-package (FAB) template every built-in federated app is made from.

A built-in app ships as a tiny FAB: a ``pyproject.toml`` (Flower's app table,
its run configuration and the egress manifest a steward approves, see
:mod:`insitu.federation.manifest`) and a one-file module that points at code
installed at the site (sites are offline and run only pre-installed code).
The app's fingerprint is the hash of these bytes, so the text made here must
stay exactly what approvals were given for: change it only with a new app
version.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppPackage", "entry_module"]

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
description = "{description}"
license = "Apache-2.0"
dependencies = {dependencies}

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "insitu"

[tool.flwr.app.components]
serverapp = "{module}:server"
clientapp = "{module}:client"

[tool.flwr.app.config]
{config}"""

_MODULE = '''"""{doc}"""

from {code} import {client}, {server}

client = {client}()
server = {server}()
'''


def entry_module(
    doc: str, code: str, client: str = "client_app", server: str = "server_app"
) -> str:
    """The FAB's module: ``client``/``server`` built by functions of installed ``code``."""
    return _MODULE.format(doc=doc, code=code, client=client, server=server)


@dataclass(frozen=True)
class AppPackage:
    """What a built-in app's FAB declares.

    ``config`` is the ``[tool.flwr.app.config]`` body (TOML lines, the run's
    parameters with their defaults); ``egress`` the TOML that follows it (the
    ``[tool.insitu.egress]`` manifest and its arrays).
    """

    name: str
    version: str
    description: str
    dependencies: tuple[str, ...]
    module: str  # the FAB module's name (``<module>.py``)
    entry: str  # that module's text (:func:`entry_module`)
    config: str
    egress: str

    def pyproject(self) -> str:
        dependencies = "[" + ", ".join(f'"{d}"' for d in self.dependencies) + "]"
        return (
            _PYPROJECT.format(
                name=self.name,
                version=self.version,
                description=self.description,
                dependencies=dependencies,
                module=self.module,
                config=self.config,
            )
            + self.egress
        )

    def files(self) -> dict[str, bytes]:
        """The FAB's files (what :func:`insitu.federation.apps.build_fab` packs)."""
        return {
            "pyproject.toml": self.pyproject().encode(),
            f"{self.module}.py": self.entry.encode(),
        }
