"""The layout is the architecture: tasks and callbacks on top (never importing each other), one
package per question below them, infrastructure at the bottom; no import cycles, no upward
edges, no function-level imports that hide an edge of the graph."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "selfsup_vis"
TOP = {"tasks", "callbacks", "cli", "__main__"}
BOTTOM = {"models", "checkpoints", "data", "features", "plotting", "config", "utils"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported selfsup_vis module, imported inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("selfsup_vis"):
                    found.append((child.module, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("selfsup_vis"))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def test_no_module_cycles():
    graph = _graph()
    edges = {m: {t for t, _ in imps if t in graph and t != m} for m, imps in graph.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of meaning
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") and m in graph)}
    assert _cycles(edges) == []


def test_no_package_cycles_and_no_upward_edges():
    edges: dict[str, set[str]] = defaultdict(set)
    upward = []
    for module, imps in _graph().items():
        src = _package(module)
        for target, _ in imps:
            dst = _package(target)
            if dst == src or dst == "<root>":
                continue
            edges[src].add(dst)
            if src in BOTTOM and dst not in BOTTOM:
                upward.append(f"{module} -> {target}")
            if src not in TOP and dst in TOP:
                upward.append(f"{module} -> {target}")
    assert _cycles(edges) == [], "cycles between packages"
    assert upward == [], "infrastructure importing questions, or anything importing tasks/callbacks"


def test_tasks_and_callbacks_do_not_import_each_other():
    bad = []
    for module, imps in _graph().items():
        src = _package(module)
        for target, _ in imps:
            dst = _package(target)
            # a task may import the harness (tasks.common) and its own parts (tasks.tsne ->
            # tasks.tsne_sources), never another task
            if {src, dst} == {"tasks", "callbacks"} or (src == dst == "tasks" and not target.endswith(
                    ("tasks.common",)) and module != target and not target.startswith(module + "_")):
                bad.append(f"{module} -> {target}")
    assert bad == []


#: function-level imports of our own modules that are deliberate (the edge still counts above)
DEFERRED = {
    # the job runner loads torch, Lightning and timm: --help, --cfg and config errors must not
    "selfsup_vis.__main__ -> selfsup_vis.tasks.common",
}


def test_no_function_level_imports_of_our_own_modules():
    """Deferred imports are for heavy optional dependencies only; one of ours hides an edge."""
    hidden = [f"{m} -> {t}" for m, imps in _graph().items() for t, nested in imps if nested]
    assert sorted(set(hidden) - DEFERRED) == []
