"""The package's dependencies point one way: no import cycle, counting imports inside functions
too, and the low rooms load nothing heavy."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastwsol

PACKAGE = Path(fastwsol.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (``fastwsol.kernels`` included,
    wherever its files live)."""
    import fastwsol.kernels

    found = {}
    for name, folder in (("fastwsol", PACKAGE), ("fastwsol.kernels", Path(fastwsol.kernels.__file__).parent)):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[0] == "kernels" and name == "fastwsol":
                continue  # found through its own package
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((name, *parts))] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fastwsol modules ``module`` imports anywhere in its file (module level or not)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    edges = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):  # a package's own parents
            edges.add(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from fastwsol.config import load_config\n")
    assert _imported("fastwsol.x", source, {"fastwsol.config": source}) == {"fastwsol.config"}


def test_fastwsol_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40  # the whole package was read
    assert cycles(graph) == []


@pytest.mark.parametrize("leaf", ["fastwsol.config", "fastwsol.io", "fastwsol.method.reference", "fastwsol.tables"])
def test_the_low_rooms_import_nothing_above_them(leaf):
    graph = import_graph()
    allowed = {"fastwsol"}  # the package's __init__ (its version)
    assert graph[leaf] <= allowed, f"{leaf} imports {sorted(graph[leaf] - allowed)}"


@pytest.mark.parametrize("module", ["fastwsol.config", "fastwsol.data"])
def test_importing_config_or_data_loads_neither_triton_nor_numba(module):
    code = f"import sys, {module}; print(sorted(m for m in ('triton', 'numba') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"import {module} loads {done.stdout.strip()}"


def test_the_import_weight_check_sees_a_heavy_import():
    code = "import sys, fastwsol.evaluation; print('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"  # the evaluator's fast path is numba: the check can fail
