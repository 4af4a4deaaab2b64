import numpy as np
import pytest
import tensorflow as tf
import keras
from hypothesis import given, settings, strategies as st

from keras_cra.layers import CRA, ChannelReassessmentAttention, adaptive_max_pool
from keras_cra.layers import builtin_pooling
from keras_cra.layers.cra import (
    adaptive_max_windows,
    bins_in_order,
    max_pool_runs,
    single_max_pool,
    strided_window,
)
from keras_cra.export import tflite
from tests.references import adaptive_max_pool_nhwc, cra_nhwc


def _random_weights(layer, rng):
    k = rng.normal(size=layer.kernel.shape).astype("float32")
    b = rng.normal(size=layer.bias.shape).astype("float32")
    layer.set_weights([k, b])
    return k, b


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    c=st.integers(1, 64),
    channels_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_numpy_reference(n, h, w, c, channels_first, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c)).astype("float32")
    fmt = "channels_first" if channels_first else "channels_last"
    layer = CRA(data_format=fmt)
    layer.build((None, c, None, None) if channels_first else (None, None, None, c))
    k, b = _random_weights(layer, rng)
    xin = x.transpose(0, 3, 1, 2) if channels_first else x
    y = keras.ops.convert_to_numpy(layer(xin))
    if channels_first:
        y = y.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "size, expected",
    [
        # 8 into 7 bins: every window has 2 rows, neighbours overlap.
        (8, [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8)]),
        # 3 into 7 bins: elements are repeated.
        (3, [(0, 1), (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 3)]),
        (1, [(0, 1)] * 7),
        (14, [(2 * i, 2 * i + 2) for i in range(7)]),
    ],
)
def test_window_rule(size, expected):
    start, end = adaptive_max_windows(size, 7)
    assert list(zip(start.tolist(), end.tolist())) == expected


@pytest.mark.parametrize("size", [8, 3, 1, 56, 10, 33])
def test_specific_sizes(size):
    rng = np.random.default_rng(size)
    x = rng.normal(size=(2, size, size, 4)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(adaptive_max_pool(x, 7, (1, 2))),
        adaptive_max_pool_nhwc(x, 7),
    )
    layer = CRA()
    layer.build(x.shape)
    k, b = _random_weights(layer, rng)
    np.testing.assert_allclose(layer(x), cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6)


def test_one_by_one_map_is_replicated():
    x = np.arange(1, 4, dtype="float32").reshape(1, 1, 1, 3)
    pooled = keras.ops.convert_to_numpy(adaptive_max_pool(x, 7, (1, 2)))
    assert pooled.shape == (1, 7, 7, 3)
    np.testing.assert_array_equal(pooled, np.broadcast_to(x, (1, 7, 7, 3)))


def test_strided_window_matches_the_window_rule():
    found = 0
    for bins in range(1, 10):
        for size in range(1, 130):
            plan = strided_window(size, bins)
            start, end = adaptive_max_windows(size, bins)
            uniform = len(set((end - start).tolist())) == 1 and (
                bins == 1 or len(set(np.diff(start).tolist())) == 1
            )
            if plan is not None:
                window, stride = plan
                found += 1
                assert stride >= 1, (size, bins)
                np.testing.assert_array_equal(start, stride * np.arange(bins))
                np.testing.assert_array_equal(end, start + window)
            elif size >= bins:
                assert not uniform, (size, bins)
    assert found > 100
    assert strided_window(8, 7) == (2, 1) and strided_window(64, 7) == (10, 9)
    assert strided_window(32, 7) is None and strided_window(3, 7) is None


def test_single_max_pool_is_tensorflows_own_pool():
    """Every size `single_max_pool` accepts, pooled by TensorFlow's own max pool with that
    window, stride and padding, equals the NumPy reference; the stride never exceeds the
    window (XNNPACK refuses such pools)."""
    rng = np.random.default_rng(0)
    found = []
    for size in range(1, 131):
        plan = single_max_pool(size, 7)
        if plan is None:
            continue
        window, stride, padding = plan
        assert 1 <= stride <= window, size
        found.append(size)
        x = rng.normal(size=(1, size, 3, 2)).astype("float32")
        got = tf.nn.max_pool2d(x, (window, 1), (stride, 1), padding.upper()).numpy()
        ref = np.stack([x[:, s:e].max(axis=1) for s, e in zip(*adaptive_max_windows(size, 7))], 1)
        np.testing.assert_array_equal(got, ref)
    # 7d, 7d + 1 and 7d - 1 (SAME: 13, 20, 48, ...); 16, 24 and 32 need several pools.
    assert {13, 14, 15, 20, 48, 56, 64}.issubset(found) and not {16, 24, 32}.intersection(found)
    assert single_max_pool(48, 7) == (8, 7, "same")


def test_max_pool_runs_cover_every_bin():
    for size in range(1, 301):
        runs, index = max_pool_runs(size, 7)
        windows = []
        for start, stop, window, stride in runs:
            assert 1 <= stride <= window and stop - start >= window, (size, runs)
            windows += [(a, a + window) for a in range(start, stop - window + 1, stride)]
        start, end = adaptive_max_windows(size, 7)
        assert [windows[i] for i in index] == list(zip(start.tolist(), end.tolist())), size
        assert len(runs) <= 7


def test_bins_in_order_slices_give_the_rows_of_index():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(1, 5, size=rng.integers(1, 5)).tolist()
        rows = np.arange(sum(sizes))
        index = rng.integers(0, len(rows), size=7)
        parts = np.split(rows, np.cumsum(sizes)[:-1])
        order = bins_in_order(sizes, index.tolist())
        got = np.concatenate([parts[p][a:b] for p, a, b in order])
        np.testing.assert_array_equal(got, rows[index])
        assert all(b > a for _, a, b in order)
        # Runs are maximal: two neighbours never continue each other.
        assert all((p, b) != (q, c) for (p, _, b), (q, c, _) in zip(order, order[1:]))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_builtin_pooling_gives_the_same_numbers(data_format):
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (3, 5), (5, 5), (6, 6), (9, 12), (16, 16), (24, 24), (32, 32),
                 (24, 48), (48, 13), (40, 80), (96, 10), (1, 30)]:
        x = rng.normal(size=(2, h, w, 3)).astype("float32")
        axes = (1, 2)
        if data_format == "channels_first":
            x, axes = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), (2, 3)
        with builtin_pooling():
            got = keras.ops.convert_to_numpy(adaptive_max_pool(x, 7, axes))
        default = keras.ops.convert_to_numpy(adaptive_max_pool(x, 7, axes))
        if data_format == "channels_first":
            got, default = got.transpose(0, 2, 3, 1), default.transpose(0, 2, 3, 1)
            x = x.transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(got, adaptive_max_pool_nhwc(x, 7))
        np.testing.assert_array_equal(default, got)


@pytest.mark.parametrize(
    "size", [7, 14, 28, 56, 21, 8, 15, 64, (8, 10), (10, 8), (56, 9), (3, 64)]
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_fast_path_equals_general_path(size, data_format):
    rng = np.random.default_rng(0)
    h, w = size if isinstance(size, tuple) else (size, size)
    shape = (2, h, w, 8) if data_format == "channels_last" else (2, 8, h, w)
    x = rng.normal(size=shape).astype("float32")
    layer = CRA(data_format=data_format)
    layer.build(shape)
    _random_weights(layer, rng)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.gate(x, fast=True)),
        keras.ops.convert_to_numpy(layer.gate(x, fast=False)),
    )


@pytest.mark.parametrize("pool_size, channels", [(7, 64), (3, 10), (1, 5)])
def test_parameter_count_and_init(pool_size, channels):
    layer = CRA(pool_size=pool_size)
    layer.build((None, 14, 14, channels))
    assert layer.count_params() == channels * (pool_size * pool_size + 1)
    assert tuple(layer.kernel.shape) == (pool_size, pool_size, channels, 1)
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_he_normal_fan_in_is_per_channel():
    layer = CRA()
    layer.build((None, 7, 7, 2048))
    std = float(np.std(layer.kernel.numpy()))
    # fan_in = 7 * 7 (as PyTorch for a depthwise conv), not 7 * 7 * 2048.
    assert abs(std - np.sqrt(2 / 49)) < 0.01


def test_gradients_flow_and_training_changes_kernel():
    inputs = keras.Input((10, 10, 6))
    model = keras.Sequential(
        [inputs, keras.layers.Conv2D(6, 3, padding="same"), CRA(name="cra"),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_layer("cra").get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 10, 10, 6)).astype("float32")
    model.train_on_batch(x, np.arange(8) % 2)
    after = model.get_layer("cra").get_weights()
    assert not np.allclose(before[0], after[0])
    assert not np.allclose(before[1], after[1])


def test_unknown_spatial_size_in_one_model():
    inputs = keras.Input((None, None, 5))
    model = keras.Model(inputs, CRA(name="cra")(inputs))
    layer = model.get_layer("cra")
    k, b = _random_weights(layer, np.random.default_rng(1))
    for h, w in [(1, 1), (3, 5), (8, 8), (28, 28), (33, 10)]:
        x = np.random.default_rng(h).normal(size=(2, h, w, 5)).astype("float32")
        np.testing.assert_allclose(model(x), cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            model.predict(x, verbose=0), cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6
        )


def test_config_round_trip():
    layer = CRA(
        pool_size=5,
        data_format="channels_first",
        kernel_regularizer="l2",
        bias_constraint="non_neg",
        name="my_cra",
    )
    config = layer.get_config()
    for key in ("pool_size", "data_format", "kernel_initializer", "bias_initializer",
                "kernel_regularizer", "bias_regularizer", "kernel_constraint",
                "bias_constraint"):
        assert key in config
    clone = ChannelReassessmentAttention.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ChannelReassessmentAttention)
    assert restored.pool_size == 5


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, CRA()(x))
    data = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(data, verbose=0), restored.predict(data, verbose=0))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    layer = CRA()
    x = np.random.default_rng(0).normal(size=(2, 14, 14, 8)).astype("float32")
    y = layer(x)
    assert layer.kernel.dtype == "float32"
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    assert keras.backend.standardize_dtype(layer.gate(keras.ops.cast(x, y.dtype)).dtype) == "float32"
    ref = cra_nhwc(x, layer.kernel.numpy(), layer.bias.numpy())
    tol = 1e-2 if policy == "mixed_float16" else 5e-2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")), ref,
                               rtol=tol, atol=tol)


def test_jit_compile():
    inputs = keras.Input((12, 12, 4))
    model = keras.Model(inputs, CRA(name="cra")(inputs))
    model.compile("sgd", "mse", jit_compile=True)
    assert model.jit_compile  # Keras falls back silently when a layer or TF's settings forbid XLA
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 4)).astype("float32")
    k, b = model.get_layer("cra").get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6)
    model.fit(x, x, epochs=1, verbose=0)
    compiled = tf.function(lambda t: model(t), jit_compile=True)
    np.testing.assert_allclose(compiled(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [14, 10, 5])
@pytest.mark.parametrize("batch_size", [2, None])
def test_tflite_builtins_only_parity(size, batch_size):
    inputs = keras.Input((size, size, 6))
    model = keras.Model(inputs, CRA(name="cra")(inputs))
    _random_weights(model.get_layer("cra"), np.random.default_rng(0))
    flat = tflite.convert(model, batch_size=batch_size)
    assert not any("Flex" in op for op in tflite.op_names(flat))
    x = np.random.default_rng(1).normal(size=(2, size, size, 6)).astype("float32")
    np.testing.assert_allclose(tflite.run(flat, x), model.predict(x, verbose=0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pool_size", [0, -1, 2.5, "7", True, None])
def test_bad_pool_size(pool_size):
    with pytest.raises(ValueError, match=r"pool_size.*Received: pool_size="):
        CRA(pool_size=pool_size)


def test_bad_data_format():
    with pytest.raises(ValueError, match="Received: data_format='nhwc'"):
        CRA(data_format="nhwc")


def test_bad_rank():
    with pytest.raises(ValueError, match=r"rank-4.*Received: input_shape="):
        CRA().build((None, 10, 3))
    with pytest.raises(ValueError, match="ndim=4"):
        CRA()(np.zeros((2, 10, 3), "float32"))


def test_unknown_channels():
    with pytest.raises(ValueError, match=r"channel dimension.*Received: input_shape="):
        CRA().build((None, 7, 7, None))


def test_wrong_channels_after_build():
    layer = CRA()
    layer(np.zeros((1, 7, 7, 3), "float32"))
    with pytest.raises(ValueError):
        layer(np.zeros((1, 7, 7, 4), "float32"))


@pytest.mark.parametrize("size", [13, 14, 15, 16])
def test_nan_inputs_follow_the_documented_rule(size):
    """A NaN in one channel: the gather path spreads it to the whole channel, as PyTorch's
    adaptive max pool does; max pools (one for 13, 14, 15; several on slices for 16 inside
    `builtin_pooling`) skip NaN and keep the gate finite, so only the NaN pixel stays NaN.
    Other channels stay finite on every path."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(1, size, size, 2)).astype("float32")
    x[0, 3, 4, 0] = np.nan
    layer = CRA()
    layer.build(x.shape)
    general = x * layer.gate(x, fast=False).numpy()
    pooled = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 7)
    assert torch.isnan(pooled[0, 0]).any() and not torch.isnan(pooled[0, 1]).any()
    # PyTorch: a NaN bin makes the channel's gate NaN, hence the whole channel.
    assert np.isnan(general[..., 0]).all() and np.isfinite(general[..., 1]).all()
    y = layer(x).numpy()
    if single_max_pool(size, 7):  # 13 (SAME), 14, 15 (7 * 2 + 1): one max pool
        assert np.isnan(y[..., 0]).sum() == 1 and np.isnan(y[0, 3, 4, 0])
    else:  # 16: the gather path
        assert np.isnan(y[..., 0]).all()
    assert np.isfinite(y[..., 1]).all()
    with builtin_pooling():
        y = layer(x).numpy()
    assert np.isnan(y[..., 0]).sum() == 1 and np.isnan(y[0, 3, 4, 0])
    assert np.isfinite(y[..., 1]).all()


@pytest.mark.parametrize("size", [(14, 14), (16, 16), (24, 48), (12, 12), (6, 6), (3, 5), (1, 1)])
def test_tflite_export_is_one_xnnpack_partition(size):
    """The exporter traces CRA inside `builtin_pooling`: max pools (stride <= window) on
    slices and concatenations of at most 4 tensors, which LiteRT's XNNPACK delegate takes
    whole, so a CRA model is one partition like the model without it, with no GATHER, at
    every size; the outputs equal Keras'. The default trace (what TensorFlow runs) still
    gathers at sizes no single max pool covers, and there XNNPACK splits the graph."""
    inputs = keras.Input(size + (3,))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with_cra = keras.Model(inputs, CRA()(x))
    assert tflite.delegate_partitions(tflite.convert(plain)) == 1
    flat = tflite.convert(with_cra)
    assert tflite.delegate_partitions(flat) == 1
    assert "GATHER" not in tflite.op_names(flat)
    images = np.random.default_rng(0).normal(size=(2,) + size + (3,)).astype("float32")
    np.testing.assert_allclose(tflite.run(flat, images), with_cra.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)
    if not (single_max_pool(size[0], 7) and single_max_pool(size[1], 7)):
        gathered = tf.lite.TFLiteConverter.from_keras_model(with_cra).convert()
        assert "GATHER" in tflite.op_names(gathered)
        assert tflite.delegate_partitions(gathered) > 1
