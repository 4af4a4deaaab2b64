"""Independent NumPy references used by the tests."""

import math

import numpy as np


def adaptive_max_pool_nhwc(x, s):
    n, h, w, c = x.shape
    out = np.empty((n, s, s, c), x.dtype)
    for i in range(s):
        h0, h1 = math.floor(i * h / s), math.ceil((i + 1) * h / s)
        for j in range(s):
            w0, w1 = math.floor(j * w / s), math.ceil((j + 1) * w / s)
            out[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def cra_nhwc(x, kernel, bias):
    """CRA on NHWC `x` with a Keras depthwise kernel (s, s, C, 1)."""
    s = kernel.shape[0]
    pooled = adaptive_max_pool_nhwc(x.astype("float64"), s)
    z = np.einsum("nijc,ijc->nc", pooled, kernel[..., 0].astype("float64")) + bias
    return (x * sigmoid(z)[:, None, None, :]).astype(x.dtype)


def adaptive_max_pool_grad_nhwc(x, s, upstream):
    """The gradient of `sum(adaptive_max_pool(x) * upstream)` w.r.t. `x`: each bin's
    upstream value goes to its window's maximum (unique maxima assumed), summed where
    windows overlap."""
    n, h, w, c = x.shape
    grad = np.zeros_like(x)
    for i in range(s):
        h0, h1 = math.floor(i * h / s), math.ceil((i + 1) * h / s)
        for j in range(s):
            w0, w1 = math.floor(j * w / s), math.ceil((j + 1) * w / s)
            window = x[:, h0:h1, w0:w1].reshape(n, -1, c)
            flat = window.argmax(axis=1)
            for b in range(n):
                for ch in range(c):
                    r, q = divmod(int(flat[b, ch]), w1 - w0)
                    grad[b, h0 + r, w0 + q, ch] += upstream[b, i, j, ch]
    return grad
