"""The layers use keras.ops only, so they run on other Keras backends."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras
    from keras_cra.layers import CRA, SqueezeExcitation, EfficientChannelAttention
    from tests.references import cra_nhwc
    assert keras.backend.backend() == "{backend}"
    rng = np.random.default_rng(0)
    for h, w in [(56, 56), (8, 10), (64, 15), (3, 3), (1, 1)]:
        x = rng.normal(size=(2, h, w, 6)).astype("float32")
        layer = CRA()
        layer.build(x.shape)
        k = rng.normal(size=(7, 7, 6, 1)).astype("float32")
        b = rng.normal(size=(6,)).astype("float32")
        layer.set_weights([k, b])
        y = keras.ops.convert_to_numpy(layer(x))
        np.testing.assert_allclose(y, cra_nhwc(x, k, b), rtol=1e-5, atol=1e-6)
        for cls in (SqueezeExcitation, EfficientChannelAttention):
            assert keras.ops.convert_to_numpy(cls()(x)).shape == x.shape
    print("ok")
    """
)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_layers_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (optional)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=root)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(backend=backend)],
        env=env, cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
