"""No file imports by editing ``sys.path``: fastwsol, the benchmarks (the package ``bench``, run as
``python -m bench.<name>`` from the repository root) and the tests (pytest puts the repository
root on ``sys.path``) import each other by their package names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("fastwsol", "bench", "tests")
LIST_EDITS = {"insert", "append", "extend", "remove", "pop", "clear"}


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(source: str) -> list[int]:
    """The lines of ``source`` that change ``sys.path``: a call of a list method that modifies it,
    an assignment to it or to an item or slice of it, or pytest's ``monkeypatch.syspath_prepend``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if (node.func.attr in LIST_EDITS and _is_sys_path(node.func.value)) or node.func.attr == "syspath_prepend":
                lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            if any(_is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)) for t in targets):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_file_edits_sys_path():
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for folder in SCANNED
        for path in sorted((REPO / folder).rglob("*.py"))
        for line in sys_path_edits(path.read_text(encoding="utf-8"))
    ]
    assert not found, "sys.path edited (import by package name instead):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source, edits",
    [
        ("sys.path.insert(0, str(ROOT))", True),
        ("sys.path.append('bench')", True),
        ("sys.path.remove(folder)", True),
        ("sys.path.extend(folders)", True),
        ("sys.path[:0] = [folder]", True),
        ("sys.path = [folder, *sys.path]", True),
        ("sys.path += [folder]", True),
        ("del sys.path[0]", True),
        ("monkeypatch.syspath_prepend(str(BENCH))", True),
        ("print(sys.path)", False),
        ("paths = list(sys.path)\npaths.insert(0, folder)", False),
        ("os.path.join(folder, name)", False),
        ("text = 'sys.path.insert(0, folder)'", False),
    ],
)
def test_sys_path_edit_detector(source, edits):
    """The scan itself: each way of editing sys.path is caught, reading it or editing a copy is not."""
    assert bool(sys_path_edits(source)) == edits
