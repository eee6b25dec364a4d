"""Imports only go downward: nmsim over accel_sim and nm_kernels (siblings) over compression over
workloads. Every import statement counts, lazy ones inside functions included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Higher number = higher layer; a package may import only packages of a lower number.
LEVEL = {"workloads": 0, "compression": 1, "nm_kernels": 2, "accel_sim": 2, "nmsim": 3}


def imported_packages(path: Path) -> set[str]:
    """The project's top-level packages that the module at ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & set(LEVEL)


def import_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for package in LEVEL:
        for path in sorted((ROOT / package).rglob("*.py")):
            for other in imported_packages(path) - {package}:
                edges.setdefault((package, other), []).append(str(path.relative_to(ROOT)))
    return edges


def test_every_import_goes_down_a_layer():
    upward = {edge: files for edge, files in import_edges().items()
              if LEVEL[edge[1]] >= LEVEL[edge[0]]}
    assert upward == {}


def test_the_checker_sees_imports_of_every_form(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import accel_sim.config\nfrom nm_kernels import cpu\nimport numpy\n"
                      "def f():\n    from workloads.models import gemms\n"
                      "from . import sibling\n")
    assert imported_packages(module) == {"accel_sim", "nm_kernels", "workloads"}
    assert ("accel_sim", "compression") in import_edges()  # the real graph is read
