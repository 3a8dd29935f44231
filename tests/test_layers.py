"""The package's layers: each module imports only from its own layer or those below it.

From the top: the command line, then the server (and the document's writer), then the app (and
beside it the connections the server keeps), then the resources and what operators see (side by
side, neither importing the other), then the resources' schemas (their public types, which
another resource may show), then the HTTP edge, the database, and the settings at the
ground. No two modules import each other, directly or round a loop. Every import counts, those
under ``TYPE_CHECKING`` or in functions too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from service.app import RESOURCES
from service.http.resources import http_handlers

PACKAGE = Path(__file__).parents[1] / "service"

RESOURCE_PACKAGES = sorted(
    {
        handler.fn.__module__.rpartition(".")[0]
        for resource in RESOURCES
        for handler in http_handlers(resource)
    }
)
"""The packages the app's resources live in: each resource's folder, and ``service.ops``
(which serves the health checks)."""

RESOURCE_SCHEMAS = sorted(
    f"{package}.schemas"
    for package in RESOURCE_PACKAGES
    if (PACKAGE.parent / package.replace(".", "/") / "schemas.py").is_file()
)
"""Each resource's public types, below every resource: another may show them (a hero its team,
a team its heroes) without importing the rest of the resource."""

LAYERS: list[list[str]] = [
    ["service.__main__"],
    ["service.serving", "service.openapi_document"],
    ["service.app", "service.connections"],
    sorted({"service.ops", *RESOURCE_PACKAGES}),
    RESOURCE_SCHEMAS,
    ["service.http"],
    ["service.database"],
    ["service.settings"],
]
"""Top to bottom; the parts of one layer never import each other."""

Graph = Mapping[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    root = PACKAGE.parent
    return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()


def imported_modules(path: Path) -> set[str]:
    """The service modules ``path`` imports, wherever in the file the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if is_module(submodule) else node.module)
    return {name for name in found if name.startswith("service.")}


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def part_of(module: str) -> tuple[int, str] | None:
    """The layer (0 at the top) and the part of it that ``module`` belongs to, the closest."""
    found = [
        (depth, part)
        for depth, parts in enumerate(LAYERS)
        for part in parts
        if module == part or module.startswith(f"{part}.")
    ]
    return max(found, key=lambda place: len(place[1]), default=None)


def upward_imports(graph: Graph) -> list[str]:
    """Every import of a module in a layer above, or in another part of the same layer."""
    wrong = []
    for module, imports in graph.items():
        here = part_of(module)
        for imported in imports:
            there = part_of(imported)
            if here is None or there is None:
                continue
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{module} imports {imported}")
    return sorted(wrong)


def cycles(graph: Graph) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a loop (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.get(module, ()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.get(module, ()):
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def unplaced(modules: Iterable[str]) -> list[str]:
    return sorted(m for m in modules if m != "service" and part_of(m) is None)


def test_every_module_has_a_layer() -> None:
    assert unplaced(import_graph()) == []


def test_every_resource_lives_in_a_package_of_its_own_beside_the_others() -> None:
    assert "service.heroes" in RESOURCE_PACKAGES
    assert all(package.count(".") == 1 for package in RESOURCE_PACKAGES), RESOURCE_PACKAGES


def test_no_module_imports_from_a_layer_above_or_beside_it() -> None:
    assert upward_imports(import_graph()) == []


def test_no_two_modules_import_each_other() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"service.http.errors": {"service.heroes.queries"}},
            ["service.http.errors imports service.heroes.queries"],
        ),
        (
            {"service.heroes.queries": {"service.ops.health"}},
            ["service.heroes.queries imports service.ops.health"],
        ),
        ({"service.database.tables": {"service.database.statements", "service.settings"}}, []),
        (
            {"service.teams.schemas": {"service.heroes.schemas"}},
            ["service.teams.schemas imports service.heroes.schemas"],
        ),
        (
            {"service.heroes.schemas": {"service.teams.queries"}},
            ["service.heroes.schemas imports service.teams.queries"],
        ),
        ({"service.teams.detail": {"service.heroes.schemas"}}, []),
    ],
)
def test_the_layer_check_finds_an_import_against_the_rule(
    graph: dict[str, set[str]], expected: list[str]
) -> None:
    assert upward_imports(graph) == expected


def test_the_cycle_check_finds_modules_that_import_each_other() -> None:
    graph = {"service.a": {"service.b"}, "service.b": {"service.c"}, "service.c": {"service.a"}}

    assert cycles(graph) == [["service.a", "service.b", "service.c"]]
    assert cycles({"service.a": {"service.b"}, "service.b": set()}) == []
