import keras
import numpy as np
import pytest

from keras_cra import inspect
from keras_cra.applications import CRAResNet20
from keras_cra.layers import CRA, SqueezeExcitation
from tests.references import adaptive_max_pool_nhwc, sigmoid


def _randomize(model, seed=0):
    """Non-zero CRA biases, so the gates are not all near 0.5 by construction."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, CRA):
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))


def test_gate_values_match_a_numpy_reference():
    model = CRAResNet20(input_shape=(32, 32, 3), classes=10)
    _randomize(model)
    images = np.random.default_rng(1).normal(size=(6, 32, 32, 3)).astype("float32")
    stats = inspect.gate_statistics(model, images, batch_size=4)
    cra_layers = [layer for layer in model.layers if isinstance(layer, CRA)]
    assert [s["name"] for s in stats] == [layer.name for layer in cra_layers]
    assert len(stats) == 9
    assert [s["stage"] for s in stats] == ["conv2"] * 3 + ["conv3"] * 3 + ["conv4"] * 3
    inputs = keras.Model(model.inputs, [layer.input for layer in cra_layers]).predict(images, verbose=0)
    for s, layer, x in zip(stats, cra_layers, inputs):
        pooled = adaptive_max_pool_nhwc(x.astype("float64"), 7)
        kernel = layer.kernel.numpy()[..., 0].astype("float64")
        expected = sigmoid(np.einsum("nijc,ijc->nc", pooled, kernel) + layer.bias.numpy())
        assert s["gates"].shape == (6, layer.bias.shape[0]) and s["attention"] == "ChannelReassessmentAttention"
        np.testing.assert_allclose(s["gates"], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s["mean"], expected.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s["std"], expected.std(0), rtol=1e-3, atol=1e-5)
    assert np.std(np.concatenate([s["gates"].ravel() for s in stats])) > 0.05


def test_nested_model_and_se():
    backbone = CRAResNet20(include_top=False, input_shape=(16, 16, 3), attention="se")
    model = keras.Sequential([keras.Input((16, 16, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    stats = inspect.gate_statistics(model, images)
    se_layers = [layer for layer in backbone.layers if isinstance(layer, SqueezeExcitation)]
    assert [s["name"] for s in stats] == [f"{backbone.name}/{layer.name}" for layer in se_layers]
    x = keras.Model(backbone.inputs, se_layers[0].input).predict(images, verbose=0)
    np.testing.assert_allclose(stats[0]["gates"],
                               keras.ops.convert_to_numpy(se_layers[0].gate(x)).reshape(3, -1),
                               rtol=1e-5, atol=1e-6)


def test_bad_input():
    plain = CRAResNet20(attention=None, input_shape=(16, 16, 3))
    images = np.zeros((2, 16, 16, 3), "float32")
    with pytest.raises(ValueError, match="no attention layers"):
        inspect.gate_statistics(plain, images)
    model = CRAResNet20(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match=r"Received: images.shape=\(16, 16, 3\)"):
        inspect.gate_statistics(model, images[0])
    with pytest.raises(ValueError, match="batch_size=0"):
        inspect.gate_statistics(model, images, batch_size=0)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        inspect.gate_statistics(Subclassed(), images)


def test_plot(tmp_path):
    from matplotlib.image import imread

    model = CRAResNet20(input_shape=(16, 16, 3))
    _randomize(model)
    stats = inspect.gate_statistics(model, np.random.default_rng(0).normal(
        size=(5, 16, 16, 3)).astype("float32"))
    path = inspect.plot_gate_statistics(stats, str(tmp_path / "gates.png"))
    image = imread(path)
    # Three stages, three rows of two panels.
    assert image.shape[0] > image.shape[1] * 0.5 and image.std() > 0
