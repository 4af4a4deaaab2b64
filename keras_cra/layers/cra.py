"""Channel Reassessment Attention (CRA)."""

import numpy as np
import keras
from keras import ops

from keras_cra.layers import _utils
from keras_cra.layers.base import ChannelGate


def adaptive_max_windows(size, bins):
    """Window bounds of PyTorch's adaptive pooling along one axis.

    Bin `i` covers `[floor(i * size / bins), ceil((i + 1) * size / bins))`.

    Returns:
        Two int NumPy arrays `(start, end)` of length `bins`.
    """
    i = np.arange(bins)
    start = (i * size) // bins
    end = -((-(i + 1) * size) // bins)
    return start, end


def adaptive_max_indices(size, bins):
    """Gather indices `(bins, k)` whose row `i` lists the rows of bin `i`.

    Windows shorter than the longest are padded by repeating their last
    index, which leaves a max reduction unchanged.
    """
    start, end = adaptive_max_windows(size, bins)
    k = int((end - start).max())
    return np.minimum(start[:, None] + np.arange(k)[None, :], end[:, None] - 1)


def _dynamic_indices(size, bins):
    # Same rule as `adaptive_max_indices`, with `size` a scalar tensor.
    i = ops.arange(bins, dtype="int32")
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    k = (size + bins - 1) // bins + 1  # an upper bound of every window length
    j = ops.arange(k, dtype="int32")
    return ops.minimum(start[:, None] + j[None, :], end[:, None] - 1)


def strided_window(size, bins):
    """`(window, stride)` of one max pool equal to adaptive max pooling.

    Adaptive max pooling of `size` rows into `bins` is a plain max pool when
    `size` is a multiple of `bins` (window = stride = `size // bins`), and
    also when `size = bins * d + 1` with `d >= 1`: bin `i` then covers
    `[i * d, i * d + d + 1)`, a window of `d + 1` rows at stride `d` (for
    example 8 rows into 7 bins, or 64 into 7).

    Returns:
        `(window, stride)`, or `None` when no single max pool matches.
    """
    if size is None:
        return None
    if size % bins == 0:
        return size // bins, size // bins
    if size > bins and size % bins == 1:
        d = size // bins
        return d + 1, d
    return None


def adaptive_max_pool(x, output_size, axes, fast=True):
    """Adaptive max pooling with PyTorch's window rule, on any input size.

    Args:
        x: a tensor.
        output_size: int, the number of bins along each axis of `axes`.
        axes: the two spatial axes of `x`.
        fast: bool. If `True`, every axis whose static size allows it (see
            `strided_window`) is pooled by one strided max pool; the other
            axes gather each bin's rows and reduce (the general path, used
            for every axis when `fast=False`). Both give identical results.
    """
    sizes = [x.shape[a] for a in axes]
    plans = [strided_window(s, output_size) if fast else None for s in sizes]
    if all(plans):
        return _strided_max_pool(x, plans, axes)
    for i, (axis, size) in enumerate(zip(axes, sizes)):
        if plans[i]:
            one_axis = [(1, 1), (1, 1)]
            one_axis[i] = plans[i]
            x = _strided_max_pool(x, one_axis, axes)
            continue
        if size is None:
            idx = _dynamic_indices(ops.shape(x)[axis], output_size)
        else:
            idx = adaptive_max_indices(size, output_size)
        # (..., bins, k, ...) then max over the window axis.
        x = ops.max(ops.take(x, idx, axis=axis), axis=axis + 1)
    return x


def _strided_max_pool(x, plans, axes):
    windows = tuple(w for w, _ in plans)
    strides = tuple(s for _, s in plans)
    if windows == (1, 1) and strides == (1, 1):
        return x
    data_format = "channels_last" if tuple(axes) == (1, 2) else "channels_first"
    return ops.max_pool(
        x,
        pool_size=windows,
        strides=strides,
        padding="valid",
        data_format=data_format,
    )


@keras.saving.register_keras_serializable(package="keras_cra")
class ChannelReassessmentAttention(ChannelGate):
    """Channel Reassessment Attention (CRA) layer.

    Reweights every channel of a feature map by a gate computed from that
    channel's own spatial layout: the map is adaptive-max-pooled to
    `pool_size x pool_size` (PyTorch's window rule, so windows overlap when
    the size is not a multiple of `pool_size` and small maps are repeated),
    a depthwise `pool_size x pool_size` convolution with bias reduces each
    channel to one number, and its sigmoid multiplies the input. There is no
    channel mixing, BatchNorm or ReLU, and the layer adds
    `channels * (pool_size**2 + 1)` parameters.

    In a residual block it sits after the last convolution + BatchNorm,
    before the residual addition.

    Non-finite inputs: where a spatial size is a multiple of `pool_size` (or
    `pool_size * d + 1`), the pool is one strided max pool, which skips NaN
    values, so a NaN pixel leaves its channel's gate finite and only that
    pixel's output is NaN. Other sizes take a gather path that, like
    PyTorch's adaptive max pool, makes a bin holding a NaN NaN, and so the
    whole channel's output. Infinities behave the same on both paths.

    Args:
        pool_size: int, side of the pooled map and of the depthwise kernel.
            Defaults to `7`.
        data_format: string, `"channels_last"` or `"channels_first"`.
            Defaults to `keras.config.image_data_format()`.
        kernel_initializer: initializer of the depthwise kernel. Defaults to
            `"he_normal"`, with its fan-in taken per channel
            (`pool_size**2`), as PyTorch computes it for a depthwise
            convolution.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer of the depthwise kernel.
        bias_regularizer: optional regularizer of the bias.
        kernel_constraint: optional constraint of the depthwise kernel.
        bias_constraint: optional constraint of the bias.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch, height, width, channels)` if `channels_last`,
        `(batch, channels, height, width)` if `channels_first`. Height and
        width may be unknown until call time; any size >= 1 works.

    Output shape:
        Same as the input shape.

    Example:

    >>> x = np.random.rand(2, 56, 56, 64).astype("float32")
    >>> y = keras_cra.layers.ChannelReassessmentAttention()(x)
    >>> y.shape
    (2, 56, 56, 64)

    Reference:
        - [Shen & Wen, Convolutional Neural Network optimization via Channel
          Reassessment Attention module, 2020](https://arxiv.org/abs/2010.05605)
    """

    def __init__(
        self,
        pool_size=7,
        data_format=None,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(
            data_format=data_format,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        if (
            isinstance(pool_size, bool)
            or not isinstance(pool_size, (int, np.integer))
            or pool_size < 1
        ):
            raise ValueError(
                "`pool_size` must be a positive integer. "
                f"Received: pool_size={pool_size!r}"
            )
        self.pool_size = int(pool_size)

    def build(self, input_shape):
        channels = self.channels(input_shape)
        s = self.pool_size
        initializer = _utils.fresh_initializer(self.kernel_initializer)

        def kernel_init(shape, dtype=None):
            # Draw as (s, s, 1, C) so fan-in is s*s per channel, then lay
            # out as Keras' depthwise kernel (s, s, C, 1).
            values = initializer((s, s, 1, channels), dtype=dtype)
            return ops.reshape(values, shape)

        self.kernel = self.add_kernel("kernel", (s, s, channels, 1), initializer=kernel_init)
        self.bias = self.add_bias("bias", (channels,))

    def gate(self, inputs, fast=True):
        """The attention gate, float32, shaped to broadcast over `inputs`."""
        axes = self.spatial_axes
        pooled = adaptive_max_pool(inputs, self.pool_size, axes, fast=fast)
        # Max pooling is exact in any precision; the gate math runs in
        # float32 even under a mixed precision policy.
        pooled = ops.cast(pooled, "float32")
        kernel = ops.cast(ops.squeeze(self.kernel, axis=-1), "float32")
        bias = ops.cast(self.bias, "float32")
        if self.data_format == "channels_first":
            kernel = ops.transpose(kernel, (2, 0, 1))
        logits = ops.sum(pooled * kernel, axis=axes, keepdims=True)
        if self.data_format == "channels_last":
            logits = logits + bias
        else:
            logits = logits + ops.reshape(bias, (-1, 1, 1))
        return ops.sigmoid(logits)

    def macs(self, input_shape):
        hw, c = self.spatial_size_and_channels(input_shape)
        return c * self.pool_size**2 + hw * c  # depthwise reduction + gating

    def get_config(self):
        config = super().get_config()
        config["pool_size"] = self.pool_size
        return config


CRA = ChannelReassessmentAttention
