"""keras-hub presets of keras_cra models, loaded back by keras-hub's own `from_preset`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub")
import keras_hub  # noqa: E402

import keras_cra  # noqa: E402
from keras_cra import hub  # noqa: E402
from keras_cra.errors import UsageError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BACKBONES = {
    "zoo": lambda: keras_cra.applications.CRAResNet18(include_top=False, input_shape=(64, 64, 3)),
    "mobilenet_v2": lambda: keras_cra.applications.CRAMobileNetV2(
        include_top=False, alpha=0.35, input_shape=(64, 64, 3)),
    "add_attention": lambda: keras_cra.add_attention(keras_cra.applications.CRAResNet18(
        include_top=False, attention=None, input_shape=(64, 64, 3)), "cra"),
}


@pytest.mark.parametrize("kind", [
    "zoo", pytest.param("mobilenet_v2", marks=pytest.mark.large),
    pytest.param("add_attention", marks=pytest.mark.large)])
def test_every_backbone_round_trips_through_a_preset(kind, tmp_path):
    original = BACKBONES[kind]()
    before = [w.copy() for w in original.get_weights()]
    backbone = hub.hub_backbone(original)
    assert isinstance(backbone, keras_hub.models.Backbone)
    assert backbone.pyramid_layers == original.pyramid_layers
    assert not {id(l) for l in backbone.layers} & {id(l) for l in original.layers}
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(backbone(x), original(x), atol=1e-6)
    hub.save_preset(backbone, tmp_path / "preset")
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is hub.HubBackbone
    np.testing.assert_allclose(loaded(x), original(x), atol=1e-6)
    features = keras.Model(loaded.inputs, loaded.pyramid_outputs)(x)
    reference = keras.Model(original.inputs, original.pyramid_outputs)(x)
    for level in reference:
        np.testing.assert_allclose(features[level], reference[level], atol=1e-6)
    for a, b in zip(before, original.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "import keras_cra.hub" in (tmp_path / "preset" / "README.md").read_text()


LOAD = r'''
import gzip, json, sys
import numpy as np
{imports}
folder = sys.argv[1]
classifier = keras_hub.models.ImageClassifier.from_preset(folder)
backbone = keras_hub.models.Backbone.from_preset(folder)
d = "/usr/share/datasets/fashion-mnist/"
with gzip.open(d + "t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
with gzip.open(d + "t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
rgb = np.repeat(images[..., None], 3, -1)  # raw 0-255 RGB: the preset's preprocessor
probs = classifier.predict(rgb, batch_size=500, verbose=0)
print(json.dumps({{"classifier": type(classifier).__name__, "backbone": type(backbone).__name__,
                  "top1": float(np.mean(probs.argmax(-1) == labels)),
                  "levels": sorted(backbone.pyramid_outputs)}}))
'''


@pytest.fixture(scope="module")
def fashion_mnist_preset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("presets") / "cra_resnet20_fashion_mnist"
    subprocess.run([sys.executable, "-m", "keras_cra.hub", str(folder)], check=True,
                   cwd=ROOT, capture_output=True)
    return folder


@pytest.mark.large
@pytest.mark.parametrize("imports", ["import keras_hub, keras_cra.hub",
                                     "import keras_hub\nimport keras_cra"])
def test_fashion_mnist_preset_loads_in_a_fresh_process(fashion_mnist_preset, imports, tmp_path):
    """keras-hub's own `from_preset`, in a new process, on the preset the script wrote: the
    10,000 real test images, raw pixels in, reach the packaged weights' accuracy."""
    from keras_cra.applications import weights as weights_lib

    folder = fashion_mnist_preset
    assert {"config.json", "task.json", "model.weights.h5", "task.weights.h5",
            "preprocessor.json", "labels.txt", "README.md"} <= set(os.listdir(folder))
    assert json.loads((folder / "config.json").read_text())["registered_name"] == \
        "keras_cra>HubBackbone"
    assert (folder / "labels.txt").read_text().split("\n")[:2] == ["T-shirt/top", "Trouser"]
    out = subprocess.run([sys.executable, "-c", LOAD.format(imports=imports), str(folder)],
                         cwd=tmp_path, capture_output=True, text=True, check=True,
                         env=dict(os.environ, KERAS_HOME=str(tmp_path / "empty")))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["classifier"] == "CRAImageClassifier" and result["backbone"] == "HubBackbone"
    assert result["levels"] == ["P0", "P1", "P2"]
    assert f"{result['top1']:.2%}" == weights_lib.FASHION_MNIST_ACCURACY
    assert result["top1"] >= 0.89


@pytest.mark.large
def test_without_registration_keras_hub_says_the_class_is_unknown(fashion_mnist_preset, tmp_path):
    """What the README in the preset is for: keras-hub alone does not know the classes."""
    code = ("import keras_hub, sys\n"
            "keras_hub.models.Backbone.from_preset(sys.argv[1])")
    out = subprocess.run([sys.executable, "-c", code, str(fashion_mnist_preset)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "keras_cra>HubBackbone" in out.stderr


def test_classifier_matches_the_zoo_model():
    task = hub.image_classifier("CRAResNet20", weights="fashion_mnist", preprocessor=False)
    model = keras_cra.applications.CRAResNet20(weights="fashion_mnist")
    x = np.random.default_rng(0).normal(size=(4, 28, 28, 3)).astype("float32")
    np.testing.assert_allclose(task.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_clear_errors(tmp_path):
    with pytest.raises(UsageError, match=r"keras_cra Backbone.*Received: backbone='plain'"):
        hub.hub_backbone(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)],
                                          name="plain"))
    with pytest.raises(UsageError, match=r"Received: model_name='ResNet9'"):
        hub.image_classifier("ResNet9")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    backbone = hub.hub_backbone(BACKBONES["zoo"]())
    with pytest.raises(UsageError, match="new or empty"):
        hub.save_preset(backbone, tmp_path / "full")
    assert os.listdir(tmp_path / "full") == ["mine.txt"]


@pytest.mark.large
def test_import_keras_cra_registers_the_classes_only_when_keras_hub_is_imported(tmp_path):
    code = ("import sys, keras\n"
            "import keras_cra\n"
            "print('keras_hub' in sys.modules,"
            " keras.saving.get_registered_object('keras_cra>HubBackbone') is not None)\n"
            "import keras_hub, importlib\n"
            "import keras_cra.hub\n"
            "print(keras.saving.get_registered_object('keras_cra>HubBackbone') is not None)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
