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
    import dataclasses

    # No field that nothing reads.
    assert [f.name for f in dataclasses.fields(zoo.ZooEntry)] == [
        "name", "builder", "style", "default_size", "min_size"]


def test_get_model_and_errors():
    model = zoo.get_model("CRAResNet20", classes=3)
    assert model.name == "cra_resnet20" and model.output.shape == (None, 3)
    with pytest.raises(ValueError, match=r"Valid names: .*Received: model_name='ResNet9'"):
        zoo.get("ResNet9")
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(zoo.ZooEntry("CRAResNet20", print, "cifar", 32, 8))


@pytest.mark.parametrize("size, style", [(28, "cifar"), (32, "cifar"), (63, "cifar"),
                                         (64, "imagenet"), (224, "imagenet")])
def test_style_for_input(size, style):
    assert zoo.style_for_input(size) == style


