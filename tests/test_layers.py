"""The package's layers point one way: paro.config/errors/files <- sw <- hw <- sim <- paro.flows.

Read from the source (AST), not from what happens to be imported: every import of a project module is at the
top of its module and never climbs to a higher layer; the numpy side imports without Amaranth.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Folder -> (package, layer rank). paro/ itself holds the ground floor and the flows subpackage.
FOLDERS = {"sw": ("paro.sw", 1), "hw": ("paro.hw", 2), "sim": ("paro.sim", 3), "constraints": ("paro.constraints", 0)}
GROUND = {"paro", "paro.config", "paro.errors", "paro.files"}
HW_MAX_LINES = 260


def _modules():
    for folder, (package, _) in FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.py")):
            yield path, package, (package if path.stem == "__init__" else f"{package}.{path.stem}")
    for path in sorted((REPO / "paro").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        package = ".".join(parts[:-1])
        yield path, package, (package if parts[-1] == "__init__" else ".".join(parts))


def layer(module):
    if module in GROUND or module.startswith(tuple(f"{g}." for g in GROUND - {"paro"})):
        return 0
    for package, rank in FOLDERS.values():
        if module == package or module.startswith(package + "."):
            return rank
    if module == "paro.flows" or module.startswith("paro.flows."):
        return 4
    raise AssertionError(f"module {module} belongs to no layer")


def _imports(tree, package):
    """(imported module, line, at top level) for every import of a project module."""
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            names = [name] if node.module else [f"{name}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("paro", "hw", "sw", "sim"):
                yield name, node.lineno, id(node) in top


MODULES = list(_modules())


@pytest.mark.parametrize("path,package,module", MODULES, ids=[m for _, _, m in MODULES])
def test_imports_point_down_and_sit_at_the_top(path, package, module):
    tree = ast.parse(path.read_text())
    own = layer(module)
    for name, line, at_top in _imports(tree, package):
        where = f"{path.relative_to(REPO)}:{line} imports {name}"
        assert name.split(".")[0] == "paro", f"{where}: import the installed package (paro.{name})"
        assert at_top, f"{where} inside a function or class; imports of project modules go at the top"
        assert layer(name) <= own, f"{where}: layer {layer(name)} is above {module}'s layer {own}"
    assert "_MustUse__silence" not in path.read_text(), f"{path.relative_to(REPO)} silences Amaranth's unused warning"


def test_layer_map_covers_the_package():
    assert {layer(m) for _, _, m in MODULES} == {0, 1, 2, 3, 4}


def test_numpy_side_imports_without_amaranth():
    code = ("import sys; sys.modules['amaranth'] = None; "
            "import paro, paro.sw.golden, paro.sw.calibrate, paro.sw.contract, paro.sw.program, paro.sw.plots; "
            "print(paro.PEMode.INT4.products_per_cycle)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"


def test_hardware_files_stay_small():
    """One block per file: no gateware file grows past ~260 lines, its formal properties included (the engine top
    only wires its blocks)."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in (REPO / "hw").glob("*.py")}
    assert max(sizes.values()) <= HW_MAX_LINES, {name: n for name, n in sizes.items() if n > HW_MAX_LINES}
