import ast
import inspect
import os

import pytest

import keras_cra.applications as A
from keras_cra.applications import zoo

PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_builder_is_registered_and_exported():
    assert zoo.names() == sorted(list(A.MODELS) + ["CRAMobileNetV2"])
    for name in zoo.names():
        entry = zoo.get(name)
        assert getattr(A, name) is entry.builder and entry.builder.__name__ == name
        params = list(inspect.signature(entry.builder).parameters)
        assert params[:8] == ["include_top", "weights", "input_tensor", "input_shape", "pooling",
                              "classes", "classifier_activation", "name"], name
        assert entry.style in ("imagenet", "cifar") and entry.min_size <= entry.default_size
    assert zoo.get("CRAResNet50").feature_levels == ("C2", "C3", "C4", "C5")
    assert zoo.get("CRAResNet20").feature_levels == ("C2", "C3", "C4")


def test_get_model_and_errors():
    model = zoo.get_model("CRAResNet20", classes=3)
    assert model.name == "cra_resnet20" and model.output.shape == (None, 3)
    with pytest.raises(ValueError, match=r"Valid names: .*Received: model_name='ResNet9'"):
        zoo.get("ResNet9")
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(zoo.ZooEntry("CRAResNet20", "x", print, "cifar", 32, 8))


@pytest.mark.parametrize("size, style", [(28, "cifar"), (32, "cifar"), (63, "cifar"),
                                         (64, "imagenet"), (224, "imagenet")])
def test_style_for_input(size, style):
    assert zoo.style_for_input(size) == style


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
