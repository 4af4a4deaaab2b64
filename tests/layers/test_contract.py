"""Every registered attention layer keeps the layer contract (tests/layers/contract.py)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_cra.layers import ATTENTIONS
from tests.layers import contract

NAMES = sorted(ATTENTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_both_formats(name):
    contract.check_shapes_both_formats(name)


@pytest.mark.parametrize("name", NAMES)
def test_serialization(name, tmp_path):
    contract.check_serialization(name, tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_regularizer_and_constraint(name):
    contract.check_regularizer_and_constraint(name)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision(name, policy):
    contract.check_mixed_precision(name, policy)


@pytest.mark.parametrize("name", NAMES)
def test_trainable(name):
    contract.check_trainable(name)


@pytest.mark.parametrize("name", NAMES)
def test_channels_fixed_after_build(name):
    contract.check_channels_fixed_after_build(name)


@pytest.mark.parametrize("name", NAMES)
def test_bad_data_format(name):
    contract.check_bad_data_format(name)


@pytest.mark.parametrize("name", NAMES)
def test_macs(name):
    contract.check_macs(name)


@pytest.mark.parametrize("name", NAMES)
def test_near_identity(name):
    contract.check_near_identity(name)


BACKEND_SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np, keras
    from keras_cra.layers import ATTENTIONS, get_attention
    assert keras.backend.backend() == "{backend}"

    def grad_of(f, x):
        if keras.backend.backend() == "jax":
            import jax
            return np.asarray(jax.grad(f)(x))
        if keras.backend.backend() == "torch":
            import torch
            t = torch.tensor(x, requires_grad=True)
            f(t).backward()
            return t.grad.numpy()
        import tensorflow as tf
        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = f(t)
        return tape.gradient(y, t).numpy()

    weights, x = np.load(sys.argv[1], allow_pickle=True), np.load(sys.argv[2])
    out = {{}}
    for name in sorted(ATTENTIONS):
        layer = get_attention(name)
        layer.build(x.shape)
        layer.set_weights(list(weights.item()[name]))
        out[name] = keras.ops.convert_to_numpy(layer(x)).tolist()
    # CRA at every kind of map size (strided, 7d+1, gather, smaller than 7) against NumPy.
    from keras_cra.layers import CRA
    from tests.references import cra_nhwc
    rng = np.random.default_rng(0)
    for h, w in [(56, 56), (8, 10), (64, 15), (3, 3), (1, 1), (13, 20), (48, 6)]:
        xs = rng.normal(size=(2, h, w, 6)).astype("float32")
        layer = CRA()
        layer.build(xs.shape)
        k = rng.normal(size=(7, 7, 6, 1)).astype("float32")
        b = rng.normal(size=(6,)).astype("float32")
        layer.set_weights([k, b])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(xs)), cra_nhwc(xs, k, b),
                                   rtol=1e-5, atol=1e-6)
    # Every pooling path of this backend (e.g. PyTorch's block reduction and its own
    # adaptive pool on a channels-first view) in both data formats, against NumPy.
    from keras_cra.layers import adaptive_max_pool as pool
    from tests.references import adaptive_max_pool_nhwc as reference
    from tests.references import adaptive_max_pool_grad_nhwc as reference_grad
    sizes = [(56, 56), (112, 56), (14, 28), (32, 32), (7, 7), (9, 4), (1, 1), (16, 13), (8, 48),
             (3, 20), (10, 11), (12, 17)]
    for h, w in sizes:
        xs = rng.normal(size=(2, h, w, 5)).astype("float32")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(pool(xs, 7, (1, 2))),
                                      reference(xs, 7))
        first = keras.ops.convert_to_numpy(pool(xs.transpose(0, 3, 1, 2), 7, (2, 3)))
        np.testing.assert_array_equal(first.transpose(0, 2, 3, 1), reference(xs, 7))
        if keras.backend.backend() == "torch":  # Keras' torch layout: channels-first memory
            import torch
            view = torch.tensor(xs.transpose(0, 3, 1, 2).copy()).permute(0, 2, 3, 1)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(pool(view, 7, (1, 2))),
                                          reference(xs, 7))
        # The gradient of this backend's path (unique maxima: each bin's to its argmax).
        up = rng.normal(size=(2, 7, 7, 5)).astype("float32")
        up_ = keras.ops.convert_to_tensor(up)
        got = grad_of(lambda t: keras.ops.sum(keras.ops.multiply(pool(t, 7, (1, 2)), up_)), xs)
        np.testing.assert_allclose(got, reference_grad(xs, 7, up), rtol=1e-6, atol=1e-6,
                                   err_msg=str((h, w)))
    # Ties (a constant map; values rounded to a few levels): each bin's upstream value
    # reaches its window once on every backend, so per channel the gradient sums to it.
    for h, w in [(32, 32), (16, 13), (56, 56), (5, 9)]:
        for xs in (np.ones((2, h, w, 3), "float32"),
                   np.round(rng.normal(size=(2, h, w, 3))).astype("float32")):
            up = rng.normal(size=(2, 7, 7, 3)).astype("float32")
            up_ = keras.ops.convert_to_tensor(up)
            got = grad_of(lambda t: keras.ops.sum(keras.ops.multiply(pool(t, 7, (1, 2)), up_)), xs)
            # float32 shares of a tie split evenly (TF's gather path, JAX) round off
            np.testing.assert_allclose(got.sum(axis=(1, 2), dtype="float64"),
                                       up.sum(axis=(1, 2)), rtol=1e-4, atol=1e-4,
                                       err_msg=str((h, w)))
    # The exporter's pooling (max pools on slices) on this backend too.
    from keras_cra.layers import adaptive_max_pool, builtin_pooling
    from tests.references import adaptive_max_pool_nhwc
    for h, w in [(24, 16), (5, 3), (48, 13)]:
        xs = rng.normal(size=(2, h, w, 3)).astype("float32")
        with builtin_pooling():
            pooled = keras.ops.convert_to_numpy(adaptive_max_pool(xs, 7, (1, 2)))
        np.testing.assert_array_equal(pooled, adaptive_max_pool_nhwc(xs, 7))
    # A .keras file saved on TensorFlow loads here; one saved here is read back there.
    model = keras.saving.load_model(sys.argv[3])
    images = np.load(sys.argv[4])
    out["model"] = keras.ops.convert_to_numpy(model.predict_on_batch(images)).tolist()
    model.save(sys.argv[5])
    print(json.dumps(out))
    """
)


@pytest.mark.large  # a subprocess per backend, 25 s each
@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
def test_same_numbers_on_other_backends(backend, tmp_path):
    """keras.ops only: JAX and PyTorch give TensorFlow's numbers with the same weights, every
    backend's pooling and its gradient match NumPy, and `.keras` files move both ways."""
    import json

    import keras

    from keras_cra.applications import CRAResNet20
    from keras_cra.layers import get_attention

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (optional)")
    x = contract.images((2, 15, 8, 16))
    weights, expected = {}, {}
    for name in NAMES:
        layer = get_attention(name)
        expected[name] = keras.ops.convert_to_numpy(layer(x))
        weights[name] = layer.get_weights()
    np.save(tmp_path / "w.npy", np.array(weights, dtype=object), allow_pickle=True)
    np.save(tmp_path / "x.npy", x)
    model = CRAResNet20(weights=None, input_shape=(20, 20, 3))  # 20, 10, 5: three CRA paths
    model.save(tmp_path / "tf.keras")
    images = contract.images((2, 20, 20, 3))
    np.save(tmp_path / "images.npy", images)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT.format(backend=backend),
         str(tmp_path / "w.npy"), str(tmp_path / "x.npy"), str(tmp_path / "tf.keras"),
         str(tmp_path / "images.npy"), str(tmp_path / "other.keras")],
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=root), cwd=root,
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name in NAMES:
        np.testing.assert_allclose(np.array(got[name]), expected[name], rtol=1e-5, atol=1e-5)
    reference = keras.ops.convert_to_numpy(model.predict_on_batch(images))
    np.testing.assert_allclose(np.array(got["model"]), reference, rtol=1e-4, atol=1e-5)
    back = keras.saving.load_model(tmp_path / "other.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back.predict_on_batch(images)),
                               reference, rtol=1e-4, atol=1e-5)
