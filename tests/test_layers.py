"""The code's shape, read from the source: one-way layers, no import loop, short modules, documented packages.

Every module under continual/ and service/ is parsed (ast, nothing is imported), with every import it holds:
at the top, inside functions (lazy imports that keep torch out of `--help` count too) and under
`if TYPE_CHECKING:`. `from continual.x import y` is an edge to the module continual.x.y when y is a
submodule, to continual.x otherwise; relative imports are resolved against the importing module's package.
Importing a.b.c also runs a/__init__ and a/b/__init__; those implicit edges are left out, so a package
__init__ that lists its submodules (strategies/) is not a loop with them.

- The layer rules hold for every import, TYPE_CHECKING ones included: an annotation names a type of the
  module it comes from, so a lower layer that needs a higher layer's type is still reaching up.
- The loop check leaves TYPE_CHECKING imports out: they never run, so they cannot make a loop at import
  time, and they are the usual way for two modules to name each other's types.

service/ never importing continual/ is also checked at run time (the serving app's sys.modules) by
tests/test_workspace.py::test_the_serving_app_never_imports_training_code; here it holds for every module
and every branch, including the ones that test does not reach.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("continual", "service")

# Lowest first. A continual module may import its own layer or a lower one, and may import service/.
# The package root continual/__init__ sits in the lowest layer.
LAYERS = (
    ("continual.params", "continual.progress"),
    ("continual.workspace",),
    ("continual.arrivals",),
    ("continual.reports",),
    ("continual.model",),
    ("continual.strategies",),
    ("continual.rounds",),
    ("continual.registry",),
    ("continual.cli",),
)

MAX_LINES = 300
# Files of continual/ allowed over MAX_LINES, each with the reason it cannot be split. Keep it empty.
LONG_FILES_ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of this repository
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`, never run

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({module_path(self.source)}:{self.line})"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


MODULES = module_files()


def module_path(module: str) -> str:
    return str(MODULES[module].relative_to(REPO))


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def own_module(dotted: str, modules: set[str]) -> str | None:
    """The longest prefix of `dotted` that is one of `modules` (`continual.cli.main` -> `continual.cli`)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside the body of an `if TYPE_CHECKING:` (not its else branch, which runs)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and is_type_checking(node.test):
            inside.update(id(child) for statement in node.body for child in ast.walk(statement))
    return inside


def imports_in(module: str, source: str, modules: set[str], packages: set[str]) -> list[Import]:
    """The imports of `modules` that `module`'s source makes, wherever they stand in it; `packages` are the
    modules that are an __init__.py."""
    tree = ast.parse(source, module)
    guarded = type_checking_nodes(tree)
    package = module if module in packages else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [own_module(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else own_module(base, modules)
                       for alias in node.names]
        else:
            continue
        found += [Import(module, target, node.lineno, id(node) in guarded)
                  for target in dict.fromkeys(targets) if target and target != module]
    return found


IMPORTS = [edge for module, path in MODULES.items()
           for edge in imports_in(module, path.read_text(), set(MODULES), {m for m in MODULES if is_package(m)})]


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return 0 if module == "continual" else None


def loops(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is one or more import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for after in sorted(edges.get(node, ())):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in on_stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest path from the component's first module back to itself (breadth first)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for after in sorted(edges.get(node, set()) & members):
                if after == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if after not in came_from:
                    came_from[after] = node
                    following.append(after)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_import_graph_was_read():
    """A guard on the reading itself: imports known to be there are found, so an empty graph cannot pass."""
    pairs = {(edge.source, edge.target) for edge in IMPORTS}
    assert ("service.app", "service.config") in pairs
    assert any(source.startswith("continual.cli") and target.startswith("continual.") for source, target in pairs)
    assert len(MODULES) > 50


def test_imports_are_read_wherever_they_stand():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import json, continual.model.encoder as encoder\n"
        "from continual.rounds import round, metrics\n"
        "from continual.workspace.layout import Workspace\n"
        "from . import ewc\n"
        "from ..model.head import refit\n"
        "if TYPE_CHECKING:\n"
        "    from continual.registry import promotion\n"
        "else:\n"
        "    from continual.reports import plots\n"
        "def train():\n"
        "    from continual.arrivals.jsonl import read_jsonl\n"
    )
    packages = {"continual", "continual.model", "continual.rounds", "continual.strategies", "continual.registry",
                "continual.reports", "continual.workspace", "continual.arrivals"}
    modules = packages | {"continual.model.encoder", "continual.model.head", "continual.rounds.round",
                          "continual.rounds.metrics", "continual.strategies.ewc", "continual.strategies.replay",
                          "continual.registry.promotion", "continual.reports.plots", "continual.workspace.layout",
                          "continual.arrivals.jsonl"}
    found = {(edge.target, edge.type_checking)
             for edge in imports_in("continual.strategies.replay", source, modules, packages)}
    assert found == {
        ("continual.model.encoder", False), ("continual.rounds.round", False), ("continual.rounds.metrics", False),
        ("continual.workspace.layout", False), ("continual.strategies.ewc", False), ("continual.model.head", False),
        ("continual.registry.promotion", True), ("continual.reports.plots", False),
        ("continual.arrivals.jsonl", False),
    }


def test_service_never_imports_continual():
    reaching = [str(edge) for edge in IMPORTS
                if edge.source.startswith("service") and edge.target.partition(".")[0] == "continual"]
    assert reaching == [], "service/ must not import the training code:\n" + "\n".join(reaching)


def test_every_continual_module_belongs_to_a_layer():
    unplaced = [module for module in MODULES if module.startswith("continual") and layer_of(module) is None]
    assert unplaced == [], f"add these to LAYERS in {Path(__file__).name}: {unplaced}"


def test_the_layers_are_one_way():
    """A module imports its own package or a lower layer (imports inside functions and TYPE_CHECKING too)."""
    upward = []
    for edge in IMPORTS:
        source, target = layer_of(edge.source), layer_of(edge.target)
        if edge.source.startswith("continual") and target is not None and source is not None and target > source:
            upward.append(f"{edge}: layer {source} imports layer {target}")
    order = " < ".join(", ".join(prefixes) for prefixes in LAYERS)
    assert upward == [], f"imports that reach up a layer (lowest first: {order}):\n" + "\n".join(upward)


def test_no_import_loop():
    """Imports that run (everywhere but under `if TYPE_CHECKING:`) form no cycle among the repository's modules.

    Each group of modules that import each other round in a loop is reported as one path around it, then
    every import among them: the loop is gone only when enough of those are."""
    running = [edge for edge in IMPORTS if not edge.type_checking]
    edges: dict[str, set[str]] = {}
    for edge in running:
        edges.setdefault(edge.source, set()).add(edge.target)
    described = []
    for component in loops(edges):
        members = set(component)
        inside = [f"    {edge}" for edge in running if edge.source in members and edge.target in members]
        described.append(" -> ".join(cycle_through(component, edges)) + "\n" + "\n".join(inside))
    assert described == [], f"{len(described)} import loop(s):\n" + "\n".join(described)


def test_no_continual_file_is_over_300_lines():
    long = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
            for module, path in MODULES.items() if module.startswith("continual")}
    over = {path: lines for path, lines in long.items() if lines > MAX_LINES and path not in LONG_FILES_ALLOWED}
    assert over == {}, f"files over {MAX_LINES} lines (split them, or allow one with a reason): {over}"
    stale = [path for path in LONG_FILES_ALLOWED if long.get(path, 0) <= MAX_LINES]
    assert stale == [], f"allowed as long but no longer are (remove from LONG_FILES_ALLOWED): {stale}"


def test_every_package_says_what_it_owns():
    """Each package __init__ has a docstring; in continual/ it also says what the package may import."""
    missing, silent_on_imports = [], []
    for module, path in MODULES.items():
        if not is_package(module):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if len(doc.split()) < 4:
            missing.append(f"{module_path(module)}: {doc!r}")
        elif module.startswith("continual.") and "import" not in doc.lower():
            silent_on_imports.append(module_path(module))
    assert missing == [], "package docstrings missing or only a name:\n" + "\n".join(missing)
    assert silent_on_imports == [], "package docstrings that do not say what the package may import: " + ", ".join(
        silent_on_imports)
