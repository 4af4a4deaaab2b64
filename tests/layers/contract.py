"""The contract every registered attention layer keeps (used by test_contract.py).

Each check builds the layer from the registry by name, so a new attention type
gets every check by being registered.
"""

import numpy as np
import keras

from keras_cra.layers import get_attention

RNG = np.random.default_rng(0)


def images(shape=(2, 9, 11, 16)):
    return RNG.normal(size=shape).astype("float32")


def check_shapes_both_formats(name):
    x = images()
    layer = get_attention(name)
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == x.shape and layer.compute_output_shape(x.shape) == x.shape
    first = get_attention(name, data_format="channels_first")
    first.build(x.transpose(0, 3, 1, 2).shape)
    first.set_weights(layer.get_weights())
    y_first = keras.ops.convert_to_numpy(first(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y_first.transpose(0, 2, 3, 1), y, rtol=1e-5, atol=1e-6)
    # The gate is in (0, 1): |y| <= |x| everywhere, and it is not the identity.
    assert np.all(np.abs(y) <= np.abs(x) + 1e-6) and not np.allclose(y, x)


def check_serialization(name, tmp_path):
    layer = get_attention(name, kernel_regularizer="l2", kernel_constraint="non_neg",
                          name=f"my_{name}")
    config = layer.get_config()
    for key in ("data_format", "kernel_initializer", "kernel_regularizer",
                "kernel_constraint"):
        assert key in config, key
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)
    model = keras.Model(inputs, get_attention(name)(x))
    data = images((2, 9, 9, 3))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(data, verbose=0),
                                  restored.predict(data, verbose=0))


def check_regularizer_and_constraint(name):
    layer = get_attention(name, kernel_regularizer=keras.regularizers.L2(0.5),
                          kernel_constraint="non_neg")
    layer(images())
    assert len(layer.losses) >= 1 and float(sum(layer.losses)) > 0
    kernels = [w for w in layer.weights if "kernel" in w.name]
    assert kernels and all(w.constraint is not None for w in kernels)


def check_mixed_precision(name, policy):
    x = images()
    reference = get_attention(name)
    expected = keras.ops.convert_to_numpy(reference(x))
    keras.config.set_dtype_policy(policy)
    try:
        layer = get_attention(name)
        layer.build(x.shape)
        layer.set_weights(reference.get_weights())
        y = layer(x)
    finally:
        keras.config.set_dtype_policy("float32")
    assert all(w.dtype == "float32" for w in layer.weights)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    tol = 1e-2 if policy == "mixed_float16" else 5e-2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")),
                               expected, rtol=tol, atol=tol)


def check_trainable(name):
    import tensorflow as tf

    # SE's bottleneck has 4 ReLU units here; a unit gets no gradient only if it is negative
    # for every sample. Per-sample channel offsets spread the pooled vectors in all directions,
    # so with 8 samples that is ~2**-8 per unit (all 4: ~2**-32); two samples offset by the
    # same +1 left all 4 dead in ~1 of 20 initialisations (a CI run failed so).
    rng = np.random.default_rng(1)
    x = tf.constant((rng.normal(size=(8, 9, 11, 64))
                     + rng.normal(size=(8, 1, 1, 64))).astype("float32"))
    layer = get_attention(name)
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert layer.trainable_weights and all(
        g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def check_channels_fixed_after_build(name):
    layer = get_attention(name)
    layer(images((1, 5, 5, 3)))
    try:
        layer(images((1, 5, 5, 4)))
    except ValueError:
        return
    raise AssertionError(f"{name} accepted another channel count after build")


def check_bad_data_format(name):
    try:
        get_attention(name, data_format="channels_middle")
    except ValueError as e:
        assert "Received: data_format='channels_middle'" in str(e)
        return
    raise AssertionError(f"{name} accepted data_format='channels_middle'")


def check_macs(name):
    layer = get_attention(name)
    layer(images())
    macs = layer.macs((None, 9, 11, 16))
    assert macs >= 9 * 11 * 16  # at least the gating multiply
    assert layer.macs((None, 18, 22, 16)) - macs == 3 * 9 * 11 * 16  # gating grows with H*W


def check_near_identity(name):
    """`start_near_identity` makes the gate about 1 for any input (or, for a gate that
    has no bias to raise, refuses with its reason); the weights it names are the layer's."""
    import pytest

    layer = get_attention(name)
    x = images()
    layer(x)
    kernel, bias = layer.near_identity_weights()
    ids = {id(w) for w in layer.weights}
    assert id(kernel) in ids and (bias is None or id(bias) in ids)
    if bias is None:
        with pytest.raises(ValueError, match=rf"{type(layer).__name__} has none \(.+\)"):
            layer.start_near_identity()
        return
    layer.start_near_identity()
    y = keras.ops.convert_to_numpy(layer(100 * x))
    np.testing.assert_allclose(y, 100 * x, rtol=1e-4)
    layer.start_near_identity(0.0)  # gate sigmoid(0) = 0.5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 0.5 * x, rtol=1e-5)
