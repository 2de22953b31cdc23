"""The package's layering, from the import statements of every module: no two modules
import each other (directly or round a longer cycle), and imports point down only.

    streamrec.cli                           the entry point: starts roles, runs tools
    api, streams                            the roles (HTTP serving; the Kafka worker)
    streamrec.measure, .local, .data, .sim  tools
    streamrec.wiring                        the composition root
    streamrec.storage, .kafka, .connections, .settings
                                            adapters and configuration
    recommender, schemas                    pure algorithms and the producers' contract

Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recommender", "schemas", "streamrec", "streams", "api")
# Pure layers: no adapters, roles or services, and none of the libraries they stand for.
PURE = ("recommender", "schemas")
SERVICE_LIBRARIES = ("redis", "aiokafka", "faust", "fastapi", "starlette", "uvicorn",
                     "asyncio")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, by absolute name (``from a import b`` names ``a.b``
    when that is a module, else ``a``)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


IMPORTS = {name: _imported(name, path) for name, path in MODULES.items()}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _internal(name: str) -> set[str]:
    """``name``'s imports among our modules (a package's import counts as its
    ``__init__``'s)."""
    return {imported for imported in IMPORTS[name] if imported in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing
    itself (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(_internal(node)):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in _internal(node):
                found.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            connect(module)
    return found


def test_the_walk_sees_the_package():
    assert {"streamrec.wiring", "streams.batch", "api.main", "recommender.engine"} <= set(
        MODULES)
    assert "streamrec.wiring" in IMPORTS["api.main"]
    assert "streams.batch" in IMPORTS["streams.rebuild"]


def test_no_import_cycles():
    assert _cycles() == []


def test_a_cycle_would_be_found(monkeypatch):
    monkeypatch.setitem(IMPORTS, "streamrec.settings",
                        IMPORTS["streamrec.settings"] | {"streamrec.wiring"})
    # wiring reaches settings directly and through streamrec.connections: one cycle of all.
    assert any({"streamrec.settings", "streamrec.wiring"} <= set(cycle) for cycle in _cycles())


@pytest.mark.parametrize("name", sorted(name for name in MODULES
                                        if _within(name, "streamrec")))
def test_streamrec_imports_no_role(name):
    """Nothing under streamrec/ imports the API; only the CLI, which starts the roles,
    imports the worker's package."""
    above = ("api", "streams") if not _within(name, "streamrec.cli") else ("api",)
    wrong = sorted(i for i in IMPORTS[name] if any(_within(i, role) for role in above))
    assert not wrong, f"{name} imports {wrong}"


@pytest.mark.parametrize("name", sorted(name for name in MODULES
                                        if any(_within(name, p) for p in PURE)))
def test_pure_layers_import_no_adapter_or_service(name):
    wrong = sorted(i for i in IMPORTS[name]
                   if any(_within(i, p) for p in ("streamrec", "streams", "api"))
                   or any(_within(i, library) for library in SERVICE_LIBRARIES))
    assert not wrong, f"{name} imports {wrong}"


def test_the_roles_do_not_import_each_other():
    wrong = sorted((name, i) for name in MODULES for i in IMPORTS[name]
                   if (_within(name, "api") and _within(i, "streams"))
                   or (_within(name, "streams") and _within(i, "api")))
    assert not wrong
