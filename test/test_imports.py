"""The import graph of our packages, read from the source (not imported): imports point down, never in a circle.

No cycle, counting the lazy imports inside functions too (an import that "runs back up" is a circle waiting to
happen). For the direction, module-level imports only: the `motus` CLI (motus_model/cli.py) reaches the simulator
package lazily, for its simulation subcommands.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("motus_model", "motus_sim", "motus_ros")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, lazy: bool) -> set[str]:
    """Our modules that `path` imports: at import time only, or (lazy) also inside functions."""
    imported: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        imported |= {name for name in names if name.split(".")[0] in PACKAGES}
    return imported


def graph(lazy: bool = False) -> dict[str, set[str]]:
    modules = {module_name(path): path for package in PACKAGES for path in (SRC / package).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path, lazy):
            while imported and imported not in modules:  # `from pkg.mod import name` -> pkg.mod
                imported = imported.rsplit(".", 1)[0] if "." in imported else ""
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            # A package's __init__ importing its own submodules is how packages re-export: not a cycle.
            if node == target.rsplit(".", 1)[0] and target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_not_even_through_a_lazy_import():
    cycle = find_cycle(graph(lazy=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down():
    """motus_model imports neither motus_sim nor motus_ros at import time; motus_sim never imports motus_ros."""
    for name, targets in graph().items():
        top = name.split(".")[0]
        if top == "motus_model":
            assert not {t for t in targets if t.split(".")[0] != "motus_model"}, (name, targets)
        if top == "motus_sim":
            assert not {t for t in targets if t.startswith("motus_ros")}, (name, targets)


def test_the_cycle_finder_finds_a_cycle():
    """The oracle itself: a planted cycle is reported, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
