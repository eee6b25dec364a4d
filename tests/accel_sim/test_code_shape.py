"""The simulator's functions stay short enough to read (the project's ~80-line rule)."""

import ast
from pathlib import Path

import accel_sim

MAX_FUNCTION_LINES = 80


def _function_spans(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_simulator_function_is_longer_than_80_lines():
    root = Path(accel_sim.__file__).parent
    files = list(root.rglob("*.py"))
    assert any(p.name == "mapping.py" for p in files)  # the walk found the package
    long = [f"{p.relative_to(root)}:{line} {name} ({lines} lines)" for p in files
            for name, line, lines in _function_spans(p) if lines > MAX_FUNCTION_LINES]
    assert not long, "functions over 80 lines: " + ", ".join(long)
