import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_cra.applications as A
from keras_cra.applications import resnet, zoo
from keras_cra.layers import (
    ChannelReassessmentAttention,
    EfficientChannelAttention,
    SqueezeExcitation,
)


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# Parameter counts as PyTorch counts them (trainable weights, no BN buffers).
PARAMS = [
    # model, plain, cra
    ("CRAResNet18", 11_689_512, 11_689_512 + 96_000),
    ("CRAResNet34", 21_797_672, 21_797_672 + 188_800),
    ("CRAResNet50", 25_557_032, 26_312_232),
    pytest.param("CRAResNet101", 44_549_160, 44_549_160 + 1_625_600, marks=pytest.mark.large),
    pytest.param("CRAResNeXt101", 44_177_704, 44_177_704 + 1_625_600, marks=pytest.mark.large),
]


@pytest.mark.parametrize("model_name, plain, cra", PARAMS)
def test_parameter_counts(model_name, plain, cra):
    assert trainable_count(A.get_model(model_name, attention=None)) == plain
    if cra is not None:
        model = A.get_model(model_name)
        assert trainable_count(model) == cra
        # Every block adds C * (7 * 7 + 1).
        blocks = [l for l in model.layers if isinstance(l, ChannelReassessmentAttention)]
        assert sum(l.count_params() for l in blocks) == cra - plain


# The default suite runs the full contract on a CIFAR row, the large lane on an ImageNet row
# (CRAResNet18) too; every other row shares their code paths (bottleneck blocks: the conversion tests compare CRA-ResNet-50
# and ResNeXt-50 logits with PyTorch), and its contract (30 s to a minute each on 2 cores)
# is opt-in (make test-all).
DEFAULT_CONTRACT = {"CRAResNet20"}


@pytest.mark.parametrize(
    "model_name",
    [m if m in DEFAULT_CONTRACT else pytest.param(
        m, marks=pytest.mark.large if m == "CRAResNet18" else pytest.mark.slow)
     for m in sorted(resnet.MODELS)],
)
def test_every_model_builds_trains_saves_and_exports(model_name, tmp_path):
    model = A.get_model(model_name, classes=3, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    cra = model.get_layer("conv2_block1_cra")
    before = cra.get_weights()[0].copy()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, np.array([0, 2]))
    assert np.isfinite(loss)
    assert not np.allclose(before, cra.get_weights()[0])
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    model.export(str(tmp_path / "saved"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0), atol=1e-5)


# The deepest rows are built by test_parameter_counts already; their forward pass is opt-in.
DEEP = {"CRAResNet101", "CRAResNet152", "CRAResNeXt101", "CRAResNet110"}


@pytest.mark.parametrize(
    "model_name",
    [pytest.param(m, marks=pytest.mark.slow) if m in DEEP else m
     for m in sorted(set(resnet.MODELS) - DEFAULT_CONTRACT)],
)
def test_other_models_build_and_run_forward(model_name):
    model = A.get_model(model_name, classes=3, input_shape=(32, 32, 3))
    y = model(np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype("float32"))
    assert y.shape == (1, 3) and np.all(np.isfinite(y))


def _cra_params(c):
    return c * (7 * 7 + 1)


def _se_params(c):
    h = max(1, c // 16)
    return c * h + h + h * c + c


def _eca_params(c):
    t = int(abs((np.log2(c) + 1) / 2))
    return t if t % 2 else t + 1


@pytest.mark.parametrize(
    "attention, cls, per_block_params",
    [("cra", ChannelReassessmentAttention, _cra_params), ("se", SqueezeExcitation, _se_params),
     ("eca", EfficientChannelAttention, _eca_params), (None, None, None), ("none", None, None)],
)
def test_attention_switch(attention, cls, per_block_params):
    model = A.CRAResNet20(attention=attention, classes=10)
    blocks = [l for l in model.layers if l.name.endswith("_out")]
    assert len(blocks) == 9
    if cls is None:
        assert model.name == "resnet20"
        assert not any(
            isinstance(l, (ChannelReassessmentAttention, SqueezeExcitation, EfficientChannelAttention))
            for l in model.layers
        )
    else:
        found = [l for l in model.layers if isinstance(l, cls)]
        assert len(found) == 9
        assert found[0].name == f"conv2_block1_{attention}"
        assert model.name == f"{attention}_resnet20"
        # Three blocks per stage of 16, 32 and 64 channels.
        expected = sum(3 * per_block_params(c) for c in (16, 32, 64))
        assert sum(l.count_params() for l in found) == expected


def test_attention_kwargs_and_template():
    model = A.CRAResNet20(attention_kwargs={"pool_size": 3}, classes=10)
    assert model.get_layer("conv4_block3_cra").pool_size == 3
    assert model.get_layer("conv4_block3_cra").count_params() == 64 * 10
    model = A.CRAResNet20(attention=ChannelReassessmentAttention(pool_size=5), classes=10)
    assert model.get_layer("conv3_block1_attention").pool_size == 5


def test_cra_costs_less_than_se():
    counts = {a: trainable_count(A.CRAResNet50(attention=a)) for a in ("cra", "se")}
    assert counts["cra"] < counts["se"]


def test_layer_names_are_stable():
    model = A.CRAResNet50(weights=None)
    for name in ("conv1_conv", "conv1_bn", "pool1_pool", "conv2_block1_0_conv",
                 "conv2_block1_cra", "conv2_block1_add", "conv4_block6_out",
                 "conv5_block3_out", "avg_pool", "predictions"):
        model.get_layer(name)
    assert model.get_layer("conv4_block6_out").output.shape == (None, 14, 14, 1024)
    basic = A.CRAResNet18()
    basic.get_layer("conv5_block2_cra")
    assert basic.get_layer("conv5_block2_out").output.shape == (None, 7, 7, 512)


def test_resnext_uses_grouped_convs():
    model = A.CRAResNeXt50(include_top=False, input_shape=(64, 64, 3))
    conv = model.get_layer("conv2_block1_2_conv")
    assert conv.groups == 32 and conv.filters == 128
    assert model.get_layer("conv5_block1_2_conv").filters == 1024


@pytest.mark.parametrize("pooling, shape", [(None, (None, 2, 2, 64)), ("avg", (None, 64)),
                                            ("max", (None, 64))])
def test_pooling(pooling, shape):
    model = A.CRAResNet20(include_top=False, pooling=pooling, input_shape=(8, 8, 3))
    assert model.output.shape == shape


def test_fully_convolutional_several_sizes():
    model = A.CRAResNet18(include_top=False, input_shape=(None, None, 3))
    for size in (32, 57, 96, 130):
        x = np.random.default_rng(size).uniform(size=(1, size, size, 3)).astype("float32")
        y = model(x)
        assert y.shape[1] == y.shape[2] == int(np.ceil(size / 32))


def test_input_tensor_is_honoured():
    tensor = keras.Input((40, 40, 3), name="my_input")
    model = A.CRAResNet20(input_tensor=tensor, include_top=False)
    assert model.inputs[0] is tensor
    assert model.input_shape == (None, 40, 40, 3)


def test_classifier_activation_none_gives_logits():
    model = A.CRAResNet20(classes=4, classifier_activation=None)
    y = model.predict(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), verbose=0)
    assert not np.allclose(y.sum(axis=1), 1.0)


def test_feature_extractor():
    model = A.CRAResNet50(include_top=False, input_shape=(None, None, 3))
    features = A.feature_extractor(model)
    out = features(np.zeros((1, 128, 128, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "P2": (1, 32, 32, 256), "P3": (1, 16, 16, 512),
        "P4": (1, 8, 8, 1024), "P5": (1, 4, 4, 2048),
    }
    # One level vocabulary: the Backbone's pyramid, with or without the top.
    assert set(out) == set(model.pyramid_layers)
    cifar = A.feature_extractor(A.CRAResNet20())
    assert sorted(cifar.output) == ["P0", "P1", "P2"]
    assert sorted(A.feature_extractor(A.CRAResNet20(include_top=False)).output) == [
        "P0", "P1", "P2"]


def test_channels_first():
    keras.config.set_image_data_format("channels_first")
    model = A.CRAResNet20(classes=5, input_shape=(3, 32, 32))
    assert model.get_layer("conv2_block1_cra").data_format == "channels_first"
    assert model.get_layer("conv4_block3_out").output.shape == (None, 64, 8, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(attention="cbam"), ValueError, r"Received: attention='cbam'"),
        (dict(attention=None, attention_kwargs={"pool_size": 3}), ValueError,
         r"Received: attention_kwargs="),
        (dict(attention_kwargs={"pool_size": 0}), ValueError, r"Received: pool_size=0"),
        (dict(pooling="sum", include_top=False), ValueError, r"Received: pooling='sum'"),
        (dict(weights="imagenet", input_shape=(64, 64, 3)), ValueError,
         r"`input_shape` should be \(224, 224, 3\)"),
        (dict(include_top=False, input_shape=(16, 16, 3)), ValueError, r"at least 32"),
        (dict(weights="imagenet", classes=10), ValueError, r"`classes` should be 1000"),
        (dict(weights="imagenet", classifier_activation="relu"), ValueError,
         r"classifier_activation"),
        (dict(weights="imagenet", include_top=False, input_shape=(64, 64, 1)), ValueError,
         r"must have 3 channels"),
        (dict(weights="nonexistent"), ValueError, r"Received: weights='nonexistent'"),
        (dict(weights="/no/such/file.weights.h5"), ValueError, r"does not exist"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        A.CRAResNet50(**kwargs)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"Valid names: .*Received: model_name='ResNet9'"):
        A.get_model("ResNet9")


def test_weights_not_registered_for_model():
    with pytest.raises(ValueError, match=r"No `imagenet` weights are registered for CRAResNet20"):
        A.CRAResNet20(weights="imagenet")


def test_builders_have_keras_signature_and_docs():
    import inspect

    params = list(inspect.signature(A.CRAResNet50).parameters)
    assert params[:8] == ["include_top", "weights", "input_tensor", "input_shape", "pooling",
                          "classes", "classifier_activation", "name"]
    for name in resnet.MODELS:
        builder = getattr(A, name)
        assert builder.__name__ == name and zoo.get(name).builder is builder
        for section in ("Args:", "Returns:", "Example:", "Reference:"):
            assert section in builder.__doc__
        assert f'ResNet(**MODELS["{name}"])' in builder.__doc__
    for section in ("Args:", "Returns:", "Example:", "Reference:"):
        assert section in A.ResNet.__doc__


def test_every_named_variant_is_a_def_in_the_source():
    """Greppable: `def CRAResNet50(` is in resnet.py for every variant."""
    source = open(resnet.__file__).read()
    for name in resnet.MODELS:
        assert f"\ndef {name}(" in source, name


# ------------------------------------------------ the family builder, tiny networks

def _tiny(**kwargs):
    args = dict(style="cifar", filters=(8, 16), classes=3, input_shape=(16, 16, 3))
    args.update(kwargs)
    return A.ResNet(**args)


def test_tiny_bottleneck_network():
    model = _tiny(depths=(2, 1), block="bottleneck")
    # Bottleneck: 1x1 to the stage width, 3x3, 1x1 to 4x the width; a projection shortcut
    # where the shape changes.
    assert model.get_layer("conv2_block1_1_conv").filters == 8
    assert model.get_layer("conv2_block1_3_conv").filters == 32
    assert model.get_layer("conv2_block1_0_conv").filters == 32  # 8 -> 32 channels: projected
    assert "conv2_block2_0_conv" not in [l.name for l in model.layers]  # identity skip
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    cra = [l for l in model.layers if isinstance(l, ChannelReassessmentAttention)]
    assert [l.name for l in cra] == ["conv2_block1_cra", "conv2_block2_cra", "conv3_block1_cra"]
    # Exact parameter count, by hand: stem 3*3*3*16 + BN(16); per block the convs, BNs,
    # projection and CRA (50 per channel); the head.
    bn = lambda c: 4 * c  # noqa: E731 (gamma, beta, mean, variance)
    stem = 3 * 3 * 3 * 16 + bn(16)
    b1 = 16 * 8 + bn(8) + 9 * 8 * 8 + bn(8) + 8 * 32 + bn(32) + 16 * 32 + bn(32) + 50 * 32
    b2 = 32 * 8 + bn(8) + 9 * 8 * 8 + bn(8) + 8 * 32 + bn(32) + 50 * 32
    b3 = (32 * 16 + bn(16) + 9 * 16 * 16 + bn(16) + 16 * 64 + bn(64) + 32 * 64 + bn(64)
          + 50 * 64)
    assert model.count_params() == stem + b1 + b2 + b3 + 64 * 3 + 3
    y = model.predict(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), verbose=0)
    assert y.shape == (2, 3) and np.allclose(y.sum(-1), 1, atol=1e-5)


def test_tiny_resnext_network():
    model = _tiny(depths=(1, 1), block="bottleneck", groups=4, width_per_group=8)
    conv = model.get_layer("conv2_block1_2_conv")
    # width = filters * width_per_group / 64 * groups = 8 * 8/64 * 4 = 4 channels in 4 groups
    assert conv.groups == 4 and conv.filters == 4
    assert tuple(conv.kernel.shape) == (3, 3, 1, 4)
    assert model.get_layer("conv3_block1_2_conv").filters == 8
    plain = _tiny(depths=(1, 1), block="bottleneck", groups=4, width_per_group=8, attention=None)
    assert model.count_params() - plain.count_params() == 50 * (32 + 64)


def test_named_variants_are_the_family_builder_with_their_row():
    named = A.CRAResNet20(weights=None, classes=10)
    family = A.ResNet(**resnet.MODELS["CRAResNet20"], classes=10, name=named.name)
    assert [l.name for l in named.layers[1:]] == [l.name for l in family.layers[1:]]
    assert named.count_params() == family.count_params()
    assert resnet.MODELS["CRAResNeXt50"] == dict(
        style="imagenet", block="bottleneck", depths=(3, 4, 6, 3), groups=32, width_per_group=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=()), r"Received: depths=\(\)"),
    (dict(depths=(2, 0)), r"Received: depths=\(2, 0\)"),
    (dict(depths=(1, 1), block="wide"), r"Received: block='wide'"),
    (dict(depths=(1, 1), style="tiny"), r"Received: style='tiny'"),
    (dict(depths=(1, 1, 1)), r"one positive width per stage.*Received: filters=\(8, 16\)"),
    (dict(depths=(1, 1), groups=2), r"Grouped \(ResNeXt\) blocks need `block='bottleneck'`"),
    (dict(depths=(1, 1), block="bottleneck", groups=0), r"Received: groups=0"),
])
def test_family_builder_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kwargs)


def test_family_builder_has_no_registered_weights():
    with pytest.raises(ValueError, match=r"No `imagenet` weights are registered for this ResNet"):
        _tiny(depths=(1, 1), weights="imagenet")


# ---------------------------------------------------------------- initialisation

def _random_kernels(model):
    """Every randomly initialised weight (kernels; not biases or BatchNorm)."""
    return {w.path: keras.ops.convert_to_numpy(w).ravel() for w in model.weights
            if "kernel" in w.name}


@pytest.mark.parametrize("attention", ["cra", "se", "eca"])
def test_no_two_kernels_start_equal(attention):
    kernels = _random_kernels(A.CRAResNet20(attention=attention, classes=10))
    assert len(kernels) > 20
    names = sorted(kernels)
    for i, a in enumerate(names):
        assert np.std(kernels[a]) > 0, a
        for b in names[i + 1:]:
            n = min(kernels[a].size, kernels[b].size)
            # Equal leading values would mean one seed shared by two weights.
            assert not np.array_equal(kernels[a][:n], kernels[b][:n]), (a, b)


def test_two_builds_differ():
    first = _random_kernels(A.CRAResNet20(classes=10))
    second = _random_kernels(A.CRAResNet20(classes=10))
    assert first.keys() == second.keys()
    for path in first:
        assert not np.array_equal(first[path], second[path]), path


def test_initializer_instance_is_not_shared_between_layers():
    init = keras.initializers.HeNormal()
    model = A.CRAResNet20(classes=10, attention_kwargs={"kernel_initializer": init})
    a = model.get_layer("conv2_block1_cra").kernel.numpy()
    b = model.get_layer("conv2_block2_cra").kernel.numpy()
    assert not np.array_equal(a, b)


_SEEDED_BUILD = (
    "import hashlib, keras, numpy as np\n"
    "keras.utils.set_random_seed(7)\n"
    "import keras_cra.applications as A\n"
    "for attention in ('cra', 'se'):\n"
    "    m = A.CRAResNet20(attention=attention, classes=10)\n"
    "    print(hashlib.sha256(b''.join(np.asarray(w).tobytes() for w in m.get_weights()))"
    ".hexdigest())\n"
)


@pytest.mark.large
def test_seeded_build_is_identical_across_processes():
    import subprocess
    import sys

    # Seeded before keras_cra is imported, and after: neither may matter.
    code = _SEEDED_BUILD
    late = code.replace("keras.utils.set_random_seed(7)\nimport keras_cra.applications as A",
                        "import keras_cra.applications as A\nkeras.utils.set_random_seed(7)")
    first, second = [
        subprocess.run([sys.executable, "-c", c], capture_output=True, text=True,
                       check=True).stdout.split() for c in (code, late)]
    assert len(first) == 2 and all(len(d) == 64 for d in first)
    assert first == second
    # Another seed gives other weights (here, in this process).
    import hashlib

    keras.utils.set_random_seed(8)
    other = A.CRAResNet20(attention="cra", classes=10)
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in other.get_weights()))
    assert digest.hexdigest() != first[0]
