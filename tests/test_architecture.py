"""The import graph keeps the layout honest: data flows one way, and no module needs one that needs it back."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import relaxforcing

ROOT = Path(relaxforcing.__file__).parent
LAYERS: list[set[str]] = [
    {"devices"},
    {"model", "video", "media", "snapshot", "interrupts", "distributed", "prompts", "options"},  # import only devices
    {"checkpoints", "memory"},
    {"codecs", "text", "sampling"},
    {"toyworld", "evaluation"},
    {"pipeline"},
    {"output", "resume", "loaders"},
    {"runner"},
    {"bench", "sweep", "server", "toy_report"},
    {"cli"},
    {"__main__"},
]
"""Top-level packages and modules of ``relaxforcing``, lowest first. A module may import its own package and
anything in a lower layer, nothing beside or above it (function-level and ``TYPE_CHECKING`` imports included)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``relaxforcing`` modules it imports anywhere in its source."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("relaxforcing"):
                targets = [node.module]
                if node.module == "relaxforcing":  # `from relaxforcing import sweep`
                    targets = [f"relaxforcing.{alias.name}" for alias in node.names]
                graph[name].update(targets)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("relaxforcing"))
        graph[name].discard(name)
    return graph


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    named = {top(module_name(p)) for p in ROOT.rglob("*.py")} - {"__init__"}
    layered = set().union(*LAYERS)
    assert named == layered, f"unlayered: {sorted(named - layered)}, gone: {sorted(layered - named)}"


def test_imports_point_down_the_layers():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    wrong = sorted(f"{source} -> {target}" for source, targets in import_graph().items() for target in targets
                   if top(target) != top(source) and top(target) != "__init__"
                   and rank[top(target)] >= rank[top(source)])
    assert not wrong, "imports sideways or upwards:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = import_graph()
    # a package's __init__ re-exports its modules: an edge into a package means its __init__ and what it imports
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):  # a package importing its own modules is not a cycle
                continue
            if state.get(nxt) == "open" and not node.startswith(nxt + "."):
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
