"""The import rules of docs/architecture.md, checked on the source.

Layers, lowest first: the ground floor (every module in ``insitu/`` but the
orchestrators ``insitu.cli`` and ``insitu.demo``: config, errors, audit,
disclosure, ...) imports no component; ``datasets``
imports only the ground floor; ``hub`` may import ``datasets`` (and the enclave
settings of ``kernels`` it spawns servers with); ``federation``, ``kernels`` and
``widgets`` sit on top. Every import counts, also those inside functions: a
function-level import hides a dependency, it does not remove it.

Known breaches are listed below with their reason; the list only shrinks. A new
breach, or a new import cycle between modules, fails here.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {
    "insitu": "insitu",
    "datasets": "insitu.datasets",
    "hub": "insitu.hub",
    "kernels": "insitu.kernels",
    "federation": "insitu.federation",
    "widgets": "insitu.widgets",
}
# The orchestrators on the ground floor's top: they wire components together
# (``insitu.api``: the researcher's short API, through the gate or on the node).
# The namespace root ``insitu`` (version, the researcher's short API, imported
# lazily) may be imported by anyone; what it imports is not checked.
ORCHESTRATORS = ("insitu.api", "insitu.cli", "insitu.demo")
ROOT = "insitu"
COMPONENTS = ("datasets", "hub", "kernels", "federation", "widgets")
# component -> components it may import
ALLOWED = {
    "datasets": set(),
    "hub": {"datasets"},
    "kernels": {"datasets"},
    "federation": {"datasets", "hub"},
    "widgets": {"datasets", "hub", "kernels"},
}
# Edges the rules allow by name: the hub configures the servers it spawns.
ALLOWED_EDGES = {
    ("insitu.hub.hub_config", "insitu.kernels.enclave"),
    ("insitu.hub.local_users", "insitu.kernels.kernelspec"),
    ("insitu.hub.local_users", "insitu.kernels.enclave"),
    ("insitu.hub.local_users", "insitu.kernels.examples"),
    ("insitu.hub.hub_config", "insitu.kernels.examples"),
}
# Known breaches (source module, imported module): none left; a new one fails.
KNOWN_BREACHES: set[tuple[str, str]] = set()
# Known cycles between modules (each a sorted tuple): none left; a new one fails.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
    }


def _imports(path: Path, module: str) -> set[str]:
    """Every insitu module the file imports, at any depth (relative imports resolved)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in found if name == "insitu" or name.startswith("insitu.")}


@cache
def _graph() -> dict[str, set[str]]:
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        targets = set()
        for name in _imports(path, module):
            while name and name not in sources:  # `from pkg import name` names a module or not
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _component(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in COMPONENTS:
        return parts[1]
    return "ground"


def _is_ground(module: str) -> bool:
    return _component(module) == "ground" and module not in ORCHESTRATORS


def test_the_rules_name_modules_that_exist():
    graph = _graph()
    named = {ROOT, *ORCHESTRATORS} | {m for edge in ALLOWED_EDGES | KNOWN_BREACHES for m in edge}
    named |= {m for cycle in KNOWN_CYCLES for m in cycle}
    assert not named - set(graph), f"named in the rules but not in the tree: {named - set(graph)}"


def test_the_ground_floor_imports_no_component():
    graph = _graph()
    breaches = sorted(
        (m, t)
        for m, targets in graph.items()
        if _is_ground(m) and m != ROOT
        for t in targets
        if not _is_ground(t)
    )
    assert not breaches, f"the ground floor must not import components: {breaches}"


def test_components_import_only_the_layers_below():
    graph = _graph()
    breaches = set()
    for module, targets in graph.items():
        source = _component(module)
        if source == "ground":
            continue
        for target in targets:
            wanted = _component(target)
            if wanted in ("ground", source) and target not in ORCHESTRATORS:
                continue  # the ground floor (the root included) and the own component
            if wanted in ALLOWED[source] or (module, target) in ALLOWED_EDGES:
                continue
            breaches.add((module, target))
    new = sorted(breaches - KNOWN_BREACHES)
    fixed = sorted(KNOWN_BREACHES - breaches)
    assert not new, f"imports that break the layering (docs/architecture.md): {new}"
    assert not fixed, f"fixed, remove from KNOWN_BREACHES: {fixed}"


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected sets of two or more modules (Tarjan), package inits left out.

    A package's __init__ re-exporting its submodules, which import names from
    the package, is how Python packages present an API; that is not counted.
    """
    packages = {m for m in graph if (REPO / _path_of(m)).name == "__init__.py"}
    edges = {
        m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.add(tuple(sorted(members)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _path_of(module: str) -> Path:
    return _sources()[module].relative_to(REPO)


def test_no_new_import_cycles():
    cycles = _cycles(_graph())
    new = sorted(cycles - KNOWN_CYCLES)
    fixed = sorted(KNOWN_CYCLES - cycles)
    assert not new, f"import cycles (also through function-level imports): {new}"
    assert not fixed, f"cycle gone, remove it from KNOWN_CYCLES: {fixed}"


# --- the catalog's SQL has one owner ------------------------------------------

CATALOG_MODULE = "insitu.datasets.catalog"
_SQL_VERBS = r"(?:FROM|INTO|UPDATE|JOIN|TABLE(?: IF NOT EXISTS)?)"


@cache
def _catalog_tables() -> tuple[str, ...]:
    """The catalog's tables, read from its schema (a new table is covered at once)."""
    text = _sources()[CATALOG_MODULE].read_text()
    return tuple(sorted(set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", text))))


def _catalog_sql(path: Path) -> list[str]:
    """SQL on the catalog in one file: a string naming a catalog table after an SQL
    verb, or a statement run on a catalog's connection (``<...catalog...>.db``)."""
    pattern = re.compile(rf"\b{_SQL_VERBS}\s+(?:{'|'.join(_catalog_tables())})\b")
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if pattern.search(node.value):
                found.append(f"{path.name}:{node.lineno}: SQL {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "db":
            owner = ast.unparse(node.value)
            if "catalog" in owner.lower():
                found.append(f"{path.name}:{node.lineno}: {owner}.db")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("execute", "executemany", "executescript")
            and "catalog" in ast.unparse(node.value).lower()
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_detector_sees_the_catalogs_own_sql():
    assert {"versions", "citations", "retirements", "series"} <= set(_catalog_tables())
    assert _catalog_sql(_sources()[CATALOG_MODULE])


def test_no_sql_on_the_catalog_outside_catalog():
    """Only ``Catalog`` (insitu.datasets.catalog) speaks SQL to catalog.sqlite: its
    schema has one owner, and a reader that needs rows asks for a method."""
    outside = [
        hit
        for module, path in sorted(_sources().items())
        if module != CATALOG_MODULE
        for hit in _catalog_sql(path)
    ]
    assert not outside, "SQL on the catalog outside Catalog:\n" + "\n".join(outside)
