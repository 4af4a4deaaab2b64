"""keras_cra.add_attention: CRA (or SE/ECA) in any Keras functional or Sequential CNN."""

import numpy as np
import keras
import pytest

import keras_cra
import keras_cra.applications as A
from keras_cra.applications.weights import copy_weights_by_name
from keras_cra.layers import ChannelReassessmentAttention, SqueezeExcitation


def images(size, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("name", [
    "CRAResNet20",  # basic blocks; then bottleneck + grouped convs + projections
    pytest.param("CRAResNeXt50", marks=pytest.mark.large),
    pytest.param("CRAResNet50", marks=pytest.mark.slow)])
def test_the_rule_is_the_papers(name):
    """On the plain zoo backbone, add_attention gives the zoo's CRA model: same parameters,
    the CRA layers at the same places, equal outputs once the weights are copied."""
    plain = A.get_model(name, attention=None, include_top=False, input_shape=(32, 32, 3))
    reference = A.get_model(name, attention="cra", include_top=False, input_shape=(32, 32, 3))
    new = keras_cra.add_attention(plain, "cra")
    assert new.count_params() == reference.count_params()
    names = lambda m: [l.name for l in m.layers if isinstance(l, ChannelReassessmentAttention)]  # noqa: E731
    assert sorted(names(new)) == sorted(names(reference)) and names(new)
    # Each CRA layer reads the last BatchNorm of its block's residual branch.
    for layer in new.layers:
        if isinstance(layer, ChannelReassessmentAttention):
            source = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
            assert isinstance(source, keras.layers.BatchNormalization)
            assert source.name == reference.get_layer(layer.name)._inbound_nodes[0] \
                .input_tensors[0]._keras_history.operation.name
    copied = new.get_layer("conv1_conv").get_weights()
    copy_weights_by_name(reference, new)
    x = images(32)
    np.testing.assert_allclose(new(x), reference(x), rtol=1e-6, atol=1e-6)
    # New layer objects holding the backbone's weights.
    assert new.get_layer("conv1_conv") is not plain.get_layer("conv1_conv")
    for a, b in zip(plain.get_layer("conv1_conv").get_weights(), copied):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("attention, cls", [("cra", ChannelReassessmentAttention),
                                            ("se", SqueezeExcitation)])
def test_keras_applications_mobilenetv2_near_identity(attention, cls):
    base = keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(64, 64, 3))
    new = keras_cra.add_attention(base, attention, near_identity=True)
    found = [l for l in new.layers if isinstance(l, cls)]
    adds = [l for l in base.layers if isinstance(l, keras.layers.Add)]
    assert len(found) == len(adds) == 10  # every inverted-residual add
    x = images(64)
    a, b = base(x).numpy(), new(x).numpy()
    assert np.abs(a - b).max() <= 0.01 * np.abs(a).max()
    assert not np.array_equal(a, b)  # the gates are there (0.99995, not 1)


def test_sequential_with_a_nested_backbone():
    backbone = keras.applications.ResNet50V2(weights=None, include_top=False,
                                             input_shape=(64, 64, 3))
    model = keras.Sequential([keras.Input((64, 64, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    new = keras_cra.add_attention(model, "cra", near_identity=True)
    inner = new.layers[0]
    cra = [l for l in inner.layers if isinstance(l, ChannelReassessmentAttention)]
    assert len(cra) == 16  # ResNet-50 V2: 3 + 4 + 6 + 3 blocks
    assert new.count_params() - model.count_params() == sum(
        c * 50 for c in [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3)
    x = images(64)
    a, b = model(x).numpy(), new(x).numpy()
    assert np.abs(a - b).max() <= 0.01 * np.abs(a).max()
    assert new.layers[-1] is not model.layers[-1] and inner is not backbone
    np.testing.assert_array_equal(new.layers[-1].kernel.numpy(), model.layers[-1].kernel.numpy())


@pytest.mark.large
def test_the_new_model_is_independent_of_the_original():
    """New layers with copied weights: fitting the new model leaves the original as it was,
    and every layer's output (what feature extractors read) is a tensor of the new graph."""
    original = keras.applications.ResNet50(weights=None, include_top=False,
                                           input_shape=(64, 64, 3))
    weights = [w.copy() for w in original.get_weights()]
    new = keras_cra.add_attention(original, "cra")
    assert not {id(l) for l in new.layers} & {id(l) for l in original.layers}
    assert all(len(l._inbound_nodes) == 1 for l in original.layers + new.layers)
    features = keras.Model(new.inputs, [new.get_layer("conv3_block4_out").output,
                                        new.get_layer("conv4_block6_out").output])
    x = images(64)
    assert [f.shape for f in features(x)] == [(2, 8, 8, 512), (2, 4, 4, 1024)]
    head = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(new.output))
    trainable = keras.Model(new.input, head)
    trainable.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainable.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    for before, after in zip(weights, original.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(new.get_layer("conv1_conv").kernel.numpy(),
                              original.get_layer("conv1_conv").kernel.numpy())


@keras.saving.register_keras_serializable(package="keras_cra_tests")
class _WithSublayer(keras.layers.Layer):
    """A layer whose weights live in a sublayer (built in `build`) and in itself."""

    def build(self, input_shape):
        self.inner = keras.layers.Dense(input_shape[-1], name="inner")
        self.inner.build(input_shape)
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="random_normal",
                                     name="scale")

    def call(self, x):
        return self.inner(x) * self.scale


def test_every_weight_is_copied_exactly_and_not_shared():
    """The copy's variables are made from the original's values (leaf layers) or set after
    the build (weights of sublayers): every weight equal, no variable shared."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = _WithSublayer(name="custom")(x)
    original = keras.Model(inputs, keras.layers.Add(name="b_add")([inputs, x]))
    original.get_layer("bn").moving_mean.assign(np.arange(4, dtype="float32"))
    for name, model in (("copy_model", keras_cra.attach.copy_model(original)),
                        ("add_attention", keras_cra.add_attention(original, "cra"))):
        by_path = {w.path: w for w in model.weights}
        for w in original.weights:
            copy = by_path[w.path]
            assert copy is not w, (name, w.path)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(copy),
                                          keras.ops.convert_to_numpy(w), err_msg=name)
            copy.assign(keras.ops.full_like(copy.value, 7.0))
            assert np.all(keras.ops.convert_to_numpy(w) != 7.0), (name, w.path)
        assert all("add_weight" not in vars(l) for l in model.layers)


def test_a_graph_with_bare_operations():
    """`x + 3.0` in a functional graph (as in keras.applications' MobileNetV3) is an
    operation without weights; the copy keeps it and computes the same numbers."""
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    original = keras.Model(inputs, keras.layers.Add(name="b_add")([inputs, x]))
    assert any(not hasattr(op, "weights") for op in original.operations)
    for model in (keras_cra.attach.copy_model(original),
                  keras_cra.add_attention(original, "cra", near_identity=True)):
        x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
        a, b = original(x).numpy(), model(x).numpy()
        np.testing.assert_allclose(b, a, atol=0.01 * np.abs(a).max())
        assert model.get_layer("conv") is not original.get_layer("conv")


def test_shared_layers_stay_shared():
    inputs = keras.Input((16, 16, 8))
    shared = keras.layers.Conv2D(8, 3, padding="same", name="shared")
    x = keras.layers.Add(name="b1_add")([inputs, keras.layers.BatchNormalization()(shared(inputs))])
    y = keras.layers.Add(name="b2_add")([x, keras.layers.BatchNormalization()(shared(x))])
    new = keras_cra.add_attention(keras.Model(inputs, y), "cra")
    copies = [l for l in new.layers if l.name == "shared"]
    assert len(copies) == 1 and len(copies[0]._inbound_nodes) == 2
    assert copies[0] is not shared


def _plain_cnn():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="conv_a")(inputs)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="plain_cnn")


def test_placement_after_named_layers():
    new = keras_cra.add_attention(_plain_cnn(), "cra", placement="after",
                                  layers=["conv_a", "conv_b"])
    assert [l.name for l in new.layers if isinstance(l, ChannelReassessmentAttention)] == [
        "conv_a_cra", "conv_b_cra"]
    assert new.get_layer("conv_b")._inbound_nodes[-1].input_tensors[0]._keras_history \
        .operation.name == "conv_a_cra"


@pytest.mark.large
def test_round_trip_fit_and_tflite(tmp_path):
    from keras_cra.export import tflite

    new = keras_cra.add_attention(A.CRAResNet20(attention=None, classes=3), "cra")
    path = tmp_path / "m.keras"
    new.save(path)
    restored = keras.saving.load_model(path)
    x = images(32, n=4)
    np.testing.assert_allclose(restored.predict(x, verbose=0), new.predict(x, verbose=0),
                               atol=1e-6)
    new.compile("sgd", "sparse_categorical_crossentropy")
    before = new.get_layer("conv2_block1_cra").kernel.numpy().copy()
    new.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert not np.array_equal(before, new.get_layer("conv2_block1_cra").kernel.numpy())
    # The project's exporter: SavedModel + builtins-only TFLite, verified against Keras.
    from keras_cra.export import export_model

    report = export_model(new, tmp_path / "export", dataset=None, variants=("float32",),
                          latency_repeats=1)
    assert report["summary"]["failures"] == []
    assert set(report["artifacts"]) == {"keras", "saved_model", "float32"}
    flat = (tmp_path / "export" / "model_float32.tflite").read_bytes()
    assert not any("Flex" in op for op in tflite.op_names(flat))
    np.testing.assert_allclose(tflite.run(flat, x), new.predict(x, verbose=0), atol=1e-4)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=Subclassed()), r"subclassed model has no graph.*Received: model="),
    (dict(model=_plain_cnn()), r"placement='residual'.*0 `Add` layers.*layers=\[\.\.\.\]"),
    (dict(model=_plain_cnn(), placement="after", layers=["conv_z"]),
     r"No layer named \['conv_z'\].*Received: layers="),
    (dict(model=_plain_cnn(), attention="cbam"), r"Received: attention='cbam'"),
    (dict(model=_plain_cnn(), placement="before"), r"Received: placement='before'"),
    (dict(model=_plain_cnn(), placement="after"), r"needs `layers`"),
])
def test_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_cra.add_attention(**kwargs)


def test_near_identity_needs_a_bias():
    with pytest.raises(ValueError, match="ECA's gate is sigmoid\\(0\\) = 0.5"):
        keras_cra.add_attention(A.CRAResNet20(attention=None), "eca", near_identity=True)
