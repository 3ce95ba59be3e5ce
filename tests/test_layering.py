"""The house's rules, read from the code's imports (no module is imported here):

- the kernels (the folder kernels/, imported as cnn.kernels) import nothing above them;
- the library (cnn, less cnn.train) never imports the application (cnn.train) or the tools
  (benchmarks);
- data flows one way inside the library: cnn.layers -> cnn.functional -> cnn.ops -> kernels,
  and only cnn.ops calls launchers (elsewhere in the library, the kernels package gives argument
  checks only: its runtime and the geometry classes);
- no module imports a private (``_x``) name from another module;
- no import cycles, lazy (function-level) imports included;
- no function or class bound in a package's __init__ shadows a submodule of that package.
"""
import ast
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from support import REPO

PACKAGES = ("kernels", "cnn", "benchmarks")
KERNELS = "cnn.kernels"
# What the library outside cnn.ops may take from the kernels: the package itself (importing it
# decides compiled or interpreted), its runtime and the geometry classes (no launcher in them).
ARGUMENT_HELPERS = (KERNELS, "cnn.kernels.runtime", "cnn.kernels.conv2d.geometry",
                    "cnn.kernels.pool2d.geometry", "cnn.kernels.activation_math")
# cnn.functional is torch.nn.functional's API (plus sync_batch_norm in the same style): its
# conv2d, relu, batch_norm, ... are the functions of the modules of the same family name, and
# nothing needs those modules as attributes.
FUNCTIONAL_API = "cnn.functional"


def _module_name(path: Path) -> str:
    """Its import name: the folder kernels/ is the package cnn.kernels."""
    parts = path.relative_to(REPO).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("cnn",) + parts if parts[0] == "kernels" else parts)


def _modules() -> dict:
    """Dotted name -> (path, parsed tree) for every module of the three packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = (path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _imports(module: str):
    """(imported module, imported name or None, line) for each import in a module, the
    imported module being the most specific module of ours that the statement names."""
    path, tree = MODULES[module]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, path, node)
            for alias in node.names:
                child = f"{source}.{alias.name}"
                if child in MODULES:
                    yield child, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _ours(name: str) -> str | None:
    """The longest module of ours that ``name`` is or lies inside, else None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges():
    for module in MODULES:
        for target, name, line in _imports(module):
            ours = _ours(target)
            if ours is not None and ours != module:
                yield module, ours, name, line


EDGES = list(_edges())


def _violations(rule):
    return [f"{m}:{line} imports {t}" + (f".{n}" if n else "")
            for m, t, n, line in EDGES if rule(m, t, n)]


def test_the_rules_see_the_whole_house():
    # A reader that found no module or no import would pass every rule below.
    assert {"cnn.kernels.runtime", "cnn.kernels.conv2d.forward", "cnn.ops.registry",
            "benchmarks.gpu_check"} <= set(MODULES)
    assert len(EDGES) > 100


def test_kernels_import_nothing_above_them():
    assert _violations(lambda m, t, n: _within(m, KERNELS) and not _within(t, KERNELS)) == []


def test_the_library_never_imports_the_application_or_the_tools():
    library = lambda m: _within(m, "cnn") and not _within(m, "cnn.train")
    assert _violations(lambda m, t, n: library(m) and (_within(t, "cnn.train")
                                                       or _within(t, "benchmarks"))) == []


LAYERS = ("cnn.layers", "cnn.functional", "cnn.ops", KERNELS)


def _layer(module: str):
    return next((i for i, layer in enumerate(LAYERS) if _within(module, layer)), None)


def test_data_flows_one_way():
    """Nothing imports a layer above its own (layers -> functional -> ops -> kernels)."""
    def upward(m, t, n):
        lm, lt = _layer(m), _layer(t)
        return lm is not None and lt is not None and lt < lm
    assert _violations(upward) == []


def test_only_ops_call_launchers():
    def launcher_use(m, t, n):
        return (_within(m, "cnn") and not _within(m, "cnn.ops") and not _within(m, KERNELS)
                and _within(t, KERNELS)
                and not any(t == helper or _within(t, helper) and helper != KERNELS
                            for helper in ARGUMENT_HELPERS))
    assert _violations(launcher_use) == []


def test_no_private_name_crosses_a_module():
    assert _violations(lambda m, t, n: n is not None and n.startswith("_")
                       and not n.startswith("__")) == []


def test_no_import_cycles():
    graph = defaultdict(set)
    for m, t, _, _ in EDGES:
        # A module's own package __init__ runs before it: an import of one's package is no edge.
        if not _within(m, t):
            graph[m].add(t)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"
    for node in sorted(MODULES):
        if node not in state:
            visit(node, [])
    assert [" -> ".join(c) for c in cycles] == []


@pytest.mark.parametrize("package", sorted(m for m, (p, _) in MODULES.items()
                                           if p.name == "__init__.py"))
def test_no_function_shadows_a_module(package):
    path, tree = MODULES[package]
    submodules = {m.rpartition(".")[2] for m in MODULES if m.rpartition(".")[0] == package}
    bound = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            source = _resolve(package, path, node)
            for alias in node.names:
                name = alias.asname or alias.name
                if f"{source}.{alias.name}" != f"{package}.{name}":
                    bound.add(name)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
    shadowed = sorted(bound & submodules)
    if package == FUNCTIONAL_API:
        shadowed = [s for s in shadowed if not hasattr(torch.nn.functional, s)
                    and s != "sync_batch_norm"]
    assert shadowed == []
