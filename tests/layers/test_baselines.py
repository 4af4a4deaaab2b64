import numpy as np
import pytest
import keras

from keras_cra.layers import (
    CRA,
    EfficientChannelAttention,
    SqueezeExcitation,
    get_attention,
)
from keras_cra.layers.eca import eca_kernel_size
from keras_cra.export import tflite
from tests.references import sigmoid


def se_reference(x, w1, b1, w2, b2):
    pooled = x.mean(axis=(1, 2))
    h = np.maximum(pooled @ w1 + b1, 0)
    return x * sigmoid(h @ w2 + b2)[:, None, None, :]


def eca_reference(x, k):
    pooled = x.mean(axis=(1, 2))
    size = len(k)
    padded = np.pad(pooled, ((0, 0), (size // 2, size // 2)))
    z = np.stack([padded[:, i : i + pooled.shape[1]] for i in range(size)], -1) @ k
    return x * sigmoid(z)[:, None, None, :]


def test_se_matches_reference_and_counts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 5, 64)).astype("float32")
    layer = SqueezeExcitation()
    y = layer(x)
    w1, b1, w2, b2 = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights([w1, b1, w2, b2])
    np.testing.assert_allclose(layer(x), se_reference(x, w1, b1, w2, b2), rtol=1e-5, atol=1e-5)
    assert y.shape == x.shape
    assert layer.count_params() == 64 * 4 * 2 + 4 + 64


@pytest.mark.parametrize("channels, k", [(64, 3), (256, 5), (512, 5), (2048, 7), (16, 3)])
def test_eca_kernel_size(channels, k):
    assert eca_kernel_size(channels) == k
    layer = EfficientChannelAttention()
    layer.build((None, 4, 4, channels))
    assert layer.count_params() == k


def test_eca_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7, 9, 256)).astype("float32")
    layer = EfficientChannelAttention()
    layer.build(x.shape)
    k = rng.normal(size=layer.kernel.shape).astype("float32")
    layer.set_weights([k])
    np.testing.assert_allclose(layer(x), eca_reference(x, k[:, 0, 0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [SqueezeExcitation, EfficientChannelAttention])
def test_serialisation_and_channels_first(cls, tmp_path):
    layer = cls(name="att")
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = keras.Input((8, 8, 32))
    model = keras.Model(inputs, cls(name="att")(inputs))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 32)).astype("float32")
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    cf = cls(data_format="channels_first")
    cf.build((None, 32, 8, 8))
    cf.set_weights(model.get_layer("att").get_weights())
    np.testing.assert_allclose(
        np.transpose(cf(np.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1)), model(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("cls", [SqueezeExcitation, EfficientChannelAttention])
def test_baselines_convert_to_builtin_tflite(cls):
    inputs = keras.Input((8, 8, 32))
    model = keras.Model(inputs, cls()(inputs))
    flat = tflite.convert(model, batch_size=None)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 32)).astype("float32")
    np.testing.assert_allclose(tflite.run(flat, x), model.predict(x, verbose=0), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: reduction=0"):
        SqueezeExcitation(reduction=0)
    with pytest.raises(ValueError, match="Received: kernel_size=4"):
        EfficientChannelAttention(kernel_size=4)


@pytest.mark.parametrize("name, cls", [("cra", CRA), ("CRA", CRA), ("se", SqueezeExcitation),
                                       ("eca", EfficientChannelAttention)])
def test_get_attention_by_name(name, cls):
    layer = get_attention(name, name="x")
    assert type(layer) is cls and layer.name == "x"


def test_get_attention_none_kwargs_and_templates():
    assert get_attention(None) is None
    assert get_attention("none") is None
    assert get_attention("cra", pool_size=5).pool_size == 5
    template = CRA(pool_size=3)
    copy = get_attention(template, name="copy")
    assert copy is not template and copy.pool_size == 3 and copy.name == "copy"


@pytest.mark.parametrize("bad", ["cbam", "", 3, CRA])
def test_get_attention_rejects_unknown(bad):
    with pytest.raises(ValueError, match=r"'cra'.*'eca'.*'se'.*Received: attention="):
        get_attention(bad)
