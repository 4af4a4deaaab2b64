"""The package's import structure: no cycles, and layered (no import runs back up)."""

import ast
import os

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imports(path):
    """Modules of keras_cra imported by a file (top-level and inside functions)."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _package_modules():
    modules = {}
    for folder, _, files in os.walk(os.path.join(PACKAGE, "keras_cra")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), PACKAGE)[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return modules


def test_no_private_keras_imports_and_no_import_cycles():
    modules = _package_modules()
    assert "keras_cra.applications.zoo" in modules
    graph = {}
    for name, path in modules.items():
        imports = _imports(path)
        if name != "keras_cra.training.common":  # the keras#20585 workaround, version-guarded
            assert not [i for i in imports if i.startswith("keras.src")], name
        graph[name] = {m for m in imports if m in modules and m != name}

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    packages = {m for m, p in modules.items() if p.endswith("__init__.py")}
    cycles = [m for m in modules if m not in packages and reaches(m, m, set(packages))]
    assert not cycles, cycles


def _unit(module):
    """The top-level file or subpackage a module belongs to: `keras_cra.export.cli` ->
    `keras_cra.export`, `keras_cra.attach` -> `keras_cra.attach`."""
    return ".".join(module.split(".")[:2])


def test_layered_no_import_runs_back_up():
    """Collapsed to its top-level files and subpackages, the import graph has no cycle:
    every unit can be put on a floor above everything it imports (imports inside
    functions count too). The package face, keras_cra/__init__.py, is left out."""
    modules = _package_modules()
    graph = {}
    for name, path in modules.items():
        if name == "keras_cra":
            continue
        unit = _unit(name)
        targets = {_unit(m) for m in _imports(path) if m in modules and m != "keras_cra"}
        graph.setdefault(unit, set()).update(targets - {unit})
    floors, visiting = {}, []

    def floor(unit):
        if unit in floors:
            return floors[unit]
        assert unit not in visiting, " -> ".join(visiting[visiting.index(unit):] + [unit])
        visiting.append(unit)
        floors[unit] = 1 + max((floor(t) for t in graph.get(unit, ())), default=0)
        visiting.pop()
        return floors[unit]

    for unit in graph:
        floor(unit)
    # The ground floor: the errors every part raises; the layers stand on it alone.
    assert floors["keras_cra.errors"] == 1 and floors["keras_cra.layers"] == 2
    assert floors["keras_cra.backbone"] < floors["keras_cra.attach"] < floors[
        "keras_cra.applications"]
    assert floors["keras_cra.cli"] > max(floors["keras_cra.errors"], floors["keras_cra.files"])
