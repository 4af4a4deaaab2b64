"""Channel Reassessment Attention (CRA)."""

import contextlib
import contextvars
import functools
import itertools

import keras
import numpy as np
from keras import ops

from keras_cra.errors import ArgumentError
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
    """`(window, stride)` of one VALID max pool equal to adaptive max pooling.

    Adaptive max pooling of `size` rows into `bins` is a plain max pool when
    `size` is a multiple of `bins` (window = stride = `size // bins`), and
    also when `size = bins * d + 1` with `d >= 1`: bin `i` then covers
    `[i * d, i * d + d + 1)`, a window of `d + 1` rows at stride `d` (for
    example 8 rows into 7 bins, or 64 into 7).

    Returns:
        `(window, stride)`, or `None` when no single VALID max pool matches.
    """
    if size is None:
        return None
    if size % bins == 0:
        return size // bins, size // bins
    if size > bins and size % bins == 1:
        d = size // bins
        return d + 1, d
    return None


def _same_windows(size, window, stride):
    # The clipped windows of a SAME max pool (TensorFlow's padding split).
    out = -(-size // stride)
    before = max((out - 1) * stride + window - size, 0) // 2
    return [
        (max(j * stride - before, 0), min(j * stride - before + window, size))
        for j in range(out)
    ]


@functools.cache
def single_max_pool(size, bins):
    """`(window, stride, padding)` of one max pool equal to adaptive max pooling.

    Besides `strided_window`'s VALID cases, a SAME pool matches when only the
    first and last bins are one row shorter, e.g. `size = bins * d - 1`
    (48 rows into 7: windows of 8 at stride 7, one padded row each side).
    The stride never exceeds the window, so LiteRT's XNNPACK delegate takes
    the pool.

    Returns:
        `(window, stride, padding)`, or `None`.
    """
    if size is None:
        return None
    plan = strided_window(size, bins)
    if plan:
        return plan + ("valid",)
    start, end = adaptive_max_windows(size, bins)
    bins_ = list(zip(start.tolist(), end.tolist()))
    window = max(e - s for s, e in bins_)
    for stride in range(1, window + 1):
        if _same_windows(size, window, stride) == bins_:
            return window, stride, "same"
    return None


@functools.cache
def max_pool_runs(size, bins):
    """Adaptive max pooling along one axis as a few max pools on slices.

    The distinct bins are split into the fewest runs of consecutive bins of
    equal length at equal spacing, each run one max pool (window = bin length,
    stride = spacing <= window) on the slice the run covers.

    Returns:
        `(runs, index)`: `runs` a tuple of `(start, stop, window, stride)`,
        and `index[i]` the position of bin `i` among the runs' outputs in
        order (bins repeat when `size < bins`).
    """
    start, end = adaptive_max_windows(size, bins)
    bins_ = list(zip(start.tolist(), end.tolist()))
    windows = sorted(set(bins_))
    n = len(windows)

    def one_pool(i, j):
        group = windows[i:j]
        length = group[0][1] - group[0][0]
        if any(e - s != length for s, e in group):
            return False
        steps = {b[0] - a[0] for a, b in itertools.pairwise(group)}
        return len(steps) <= 1 and all(step <= length for step in steps)

    # Fewest runs by dynamic programming over prefixes.
    best, back = [0] + [None] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            if best[i] is not None and one_pool(i, j) and (best[j] is None or best[i] + 1 < best[j]):
                best[j], back[j] = best[i] + 1, i
    runs, j = [], n
    while j:
        i = back[j]
        group = windows[i:j]
        stride = group[1][0] - group[0][0] if len(group) > 1 else 1
        runs.append((group[0][0], group[-1][1], group[0][1] - group[0][0], stride))
        j = i
    return tuple(runs[::-1]), tuple(windows.index(b) for b in bins_)


_POOLING = contextvars.ContextVar("keras_cra_pooling", default="gather")


@contextlib.contextmanager
def builtin_pooling():
    """Traces CRA's adaptive max pool as max pools on slices, never a gather.

    Both ways give the same numbers. Inside TensorFlow, Keras, JAX and
    PyTorch the gather is faster (and its gradient is); in a `.tflite` file a
    GATHER is not taken by LiteRT's XNNPACK delegate and splits the graph, so
    the TFLite exporter traces models inside this context.
    """
    token = _POOLING.set("slices")
    try:
        yield
    finally:
        _POOLING.reset(token)


def _axis_slice(x, axis, start, stop, step=None):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop, step)
    return x[tuple(index)]


def _pool_along(x, axis, axes, window, stride, padding="valid"):
    windows, strides = [1, 1], [1, 1]
    windows[list(axes).index(axis)] = window
    strides[list(axes).index(axis)] = stride
    return _strided_max_pool(x, list(zip(windows, strides)), axes, padding)


def _concatenate(parts, axis):
    # LiteRT's XNNPACK delegate concatenates at most 4 tensors at once.
    while len(parts) > 1:
        parts = [parts[i : i + 4] for i in range(0, len(parts), 4)]
        parts = [p[0] if len(p) == 1 else ops.concatenate(p, axis=axis) for p in parts]
    return parts[0]


def _pool_by_runs(x, axis, axes, size, bins):
    runs, index = max_pool_runs(size, bins)
    outs = [
        _pool_along(_axis_slice(x, axis, a, b) if (a, b) != (0, size) else x, axis, axes, w, s)
        for a, b, w, s in runs
    ]
    if list(index) != list(range(bins)):  # fewer rows than bins: repeat windows
        outs = _in_order(outs, axis, bins_in_order([o.shape[axis] for o in outs], index))
    return _concatenate(outs, axis)


def _in_order(parts, axis, order):
    # `order`'s `(part, start, stop)` slices of `parts`, a part taken whole where it can be.
    return [parts[p] if (a, b) == (0, parts[p].shape[axis]) else _axis_slice(parts[p], axis, a, b)
            for p, a, b in order]


def adaptive_max_pool(x, output_size, axes, fast=True):
    """Adaptive max pooling with PyTorch's window rule, on any input size.

    Args:
        x: a tensor.
        output_size: int, the number of bins along each axis of `axes`.
        axes: the two spatial axes of `x`.
        fast: bool. If `True`, every axis whose static size allows it (see
            `single_max_pool`) is pooled by one max pool, first; each other
            axis gathers each bin's rows and reduces (the general path, used
            for every axis when `fast=False`), or, inside
            `builtin_pooling()`, takes a few max pools on slices
            (`max_pool_runs`). All give identical results.
    """
    sizes = [x.shape[a] for a in axes]
    plans = [single_max_pool(s, output_size) if fast else None for s in sizes]
    if fast and _POOLING.get() != "slices" and None not in x.shape[1:]:
        backend = keras.backend.backend()
        if backend == "torch":
            return _torch_adaptive_max_pool(x, output_size, axes, plans)
        if backend == "jax":
            return _jax_adaptive_max_pool(x, output_size, axes)
    if all(plans) and plans[0][2] == plans[1][2]:
        return _strided_max_pool(x, [p[:2] for p in plans], axes, plans[0][2])
    order = sorted(range(2), key=lambda i: plans[i] is None)  # single pools first
    for i in order:
        axis, size = axes[i], sizes[i]
        if plans[i]:
            x = _pool_along(x, axis, axes, *plans[i])
        elif size is not None and fast and _POOLING.get() == "slices":
            x = _pool_by_runs(x, axis, axes, size, output_size)
        else:
            if size is None:
                idx = _dynamic_indices(ops.shape(x)[axis], output_size)
            else:
                idx = adaptive_max_indices(size, output_size)
            # (..., bins, k, ...) then max over the window axis.
            x = ops.max(ops.take(x, idx, axis=axis), axis=axis + 1)
    return x


def _max_by_blocks(x, axis, bins):
    # `size` a multiple of `bins`: equal blocks, a reshape and a max over each.
    window = x.shape[axis] // bins
    if window == 1:
        return x
    shape = [-1] + list(x.shape[1:axis]) + [bins, window] + list(x.shape[axis + 1 :])
    return ops.max(ops.reshape(x, shape), axis=axis + 1)


@functools.cache
def strided_runs(size, bins):
    """Adaptive max pooling along one axis as strided slices of running maxima.

    `running[L][r]` is the max of rows `r .. r + L - 1`; each bin is one row of
    the running max of its length. The distinct windows are grouped by length
    into runs of equally spaced starts, one strided slice each.

    Returns:
        `(lengths, pieces, order)`: the window lengths needed (ascending),
        `pieces` a tuple of `(length, start, stop, step)` slices of those
        running maxima, and `order` the bins in order as `(piece, start,
        stop)` slices of the sliced pieces (`None` when the pieces
        concatenated are already in order).
    """
    start, end = adaptive_max_windows(size, bins)
    bins_ = list(zip(start.tolist(), (end - start).tolist()))
    windows = sorted(set(bins_), key=lambda w: (w[1], w[0]))
    pieces, order = [], []
    for w in windows:
        last = pieces[-1] if pieces else None
        if last and last[0] == w[1] and (last[3] is None or w[0] - last[2] == last[3]):
            step = w[0] - last[2] if last[3] is None else last[3]
            pieces[-1] = (w[1], last[1], w[0], step)
        else:
            pieces.append((w[1], w[0], w[0], None))
        order.append(w)
    pieces = tuple((l, a, e + 1, st or 1) for l, a, e, st in pieces)
    index = tuple(order.index(b) for b in bins_)
    lengths = tuple(sorted({p[0] for p in pieces}))
    if index == tuple(range(bins)):
        return lengths, pieces, None
    return lengths, pieces, bins_in_order([len(range(a, e, st)) for _, a, e, st in pieces], index)


def _max_by_strides(x, axis, bins):
    size = x.shape[axis]
    lengths, pieces, order = strided_runs(size, bins)
    running, m = {1: x}, x
    for length in range(2, lengths[-1] + 1):
        m = ops.maximum(_axis_slice(m, axis, 0, size - length + 1),
                        _axis_slice(x, axis, length - 1, size))
        running[length] = m
    parts = [_axis_slice(running[length], axis, a, e, step) for length, a, e, step in pieces]
    if order is not None:
        # Bins in order as slices of the pieces, not a gather: XLA's gradient of a gather
        # is a scatter-add, slow on CPU.
        parts = _in_order(parts, axis, order)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


def bins_in_order(sizes, index):
    """The rows `index` of parts of `sizes` rows, as runs of consecutive rows of one part.

    Both the JAX path (`strided_runs`' pieces) and the TFLite trace (`max_pool_runs`'
    pools) put their bins in order this way, by slices rather than a gather.

    Returns:
        A tuple of `(part, start, stop)`: concatenated, the slices give rows `index`
        of the parts laid end to end.
    """
    where = [(p, r) for p, n in enumerate(sizes) for r in range(n)]
    runs = []
    for p, r in (where[i] for i in index):
        if runs and runs[-1][0] == p and runs[-1][2] == r:
            runs[-1][2] = r + 1
        else:
            runs.append([p, r, r + 1])
    return tuple(tuple(run) for run in runs)


def _max_by_bins(x, axis, bins):
    # Each bin's rows sliced and reduced, the bins concatenated.
    start, end = adaptive_max_windows(x.shape[axis], bins)
    parts = [
        ops.max(_axis_slice(x, axis, a, e), axis=axis, keepdims=True)
        for a, e in zip(start.tolist(), end.tolist())
    ]
    return ops.concatenate(parts, axis=axis)


def _jax_adaptive_max_pool(x, output_size, axes):
    """The JAX backend's fast paths (the same numbers as the general ones).

    XLA's gradients of a max pool (`select_and_scatter`) and of a gather (a
    scatter-add) are slow on CPU. Here every
    axis is pooled by reductions and slices only, whose gradients are
    elementwise: equal blocks by a reshape, windows of at most 4 rows by
    slices of running maxima (`strided_runs`, the bins put in order by
    slices, not a gather), longer ones bin by bin
    (measured fastest for each, forward and gradient, on CPU).
    NaN: see `ChannelReassessmentAttention` (XLA's reductions decide).
    """
    for axis in axes:
        size = x.shape[axis]
        if size % output_size == 0:
            x = _max_by_blocks(x, axis, output_size)
        elif strided_runs(size, output_size)[0][-1] <= 4:
            x = _max_by_strides(x, axis, output_size)
        else:
            x = _max_by_bins(x, axis, output_size)
    return x


def _torch_adaptive_max_pool(x, output_size, axes, plans):
    """The PyTorch backend's fast paths (the same numbers as the general ones).

    Keras' torch layers hand on channels-last tensors whose memory is channels-first (a
    permuted view of their convolution's output) on some machines (seen on a 2-core Xeon)
    and channels-last memory on others (a 2-core AMD EPYC), and Keras' torch `max_pool` copies to
    channels-first and back (29 ms for an 8x56x56x256 map). Here the memory layout picks
    the path (times for that map at batch 8, 2 threads, on PyTorch's layout):
    - a map of `output_size` rows and columns: the map itself;
    - channels-first memory, both axes multiples of `output_size`: rows, then columns,
      reading memory in order; windows of 8 or more rows by a reshape and max (4 ms,
      against 6-10 ms for the other orders), shorter ones by elementwise maxima of strided
      views (8x28x28x512: 1.6 ms, against 2.0 ms for the adaptive pool below);
    - other channels-first memory: one copy to channels-last memory and PyTorch's own
      adaptive max pool (the definition of CRA's windows; fastest on channels-last
      memory, and its gradient the fastest on this backend);
    - channels-last memory: equal blocks by a reshape and two max reductions in place,
      else PyTorch's adaptive max pool on a channels-first view (no copy).
    NaN: every path propagates a NaN of a window to its bin.
    """
    import torch

    x = ops.convert_to_tensor(x)
    last = tuple(axes) == (1, 2)
    blocks = all(p is not None and p[2] == "valid" and p[0] == p[1] for p in plans)
    if blocks and plans[0][0] == plans[1][0] == 1:
        return x
    first = x.permute(0, 3, 1, 2) if last else x  # (N, C, H, W), a view
    if first.is_contiguous():  # channels-first memory
        n, c, h, w = first.shape
        if blocks:
            kh, kw = plans[0][0], plans[1][0]
            y = first.reshape(n, c, output_size, kh, w)
            if min(kh, kw) >= 8:
                y = y.amax(3).reshape(n, c, output_size, output_size, kw)
                pooled = y.amax(4)
            else:  # short windows: elementwise maxima of strided views
                y = functools.reduce(torch.maximum, [y[:, :, :, j] for j in range(kh)])
                y = y.reshape(n, c, output_size, output_size, kw)
                pooled = functools.reduce(torch.maximum, [y[..., j] for j in range(kw)])
        else:
            first = first.contiguous(memory_format=torch.channels_last)
            pooled = torch.nn.functional.adaptive_max_pool2d(first, output_size)
    elif blocks:
        for axis in axes:
            x = _max_by_blocks(x, axis, output_size)
        return x
    else:
        pooled = torch.nn.functional.adaptive_max_pool2d(first, output_size)
    return pooled.permute(0, 2, 3, 1) if last else pooled


def _strided_max_pool(x, plans, axes, padding="valid"):
    windows = tuple(w for w, _ in plans)
    strides = tuple(s for _, s in plans)
    if windows == (1, 1) and strides == (1, 1):
        return x
    data_format = "channels_last" if tuple(axes) == (1, 2) else "channels_first"
    return ops.max_pool(
        x,
        pool_size=windows,
        strides=strides,
        padding=padding,
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

    Non-finite inputs: infinities behave the same on every path. NaN
    depends on the backend's max. PyTorch: a bin whose window holds a NaN is
    NaN (as in PyTorch's own adaptive max pool), so the channel's gate and
    whole output are NaN. TensorFlow: an axis pooled by a max pool skips NaN
    (a NaN pixel leaves the gate finite and only that pixel's output NaN);
    that is every axis whose size one max pool covers (multiples of
    `pool_size`, `pool_size * d + 1`, `pool_size * d - 1`; see
    `single_max_pool`) except a map of `pool_size` itself (each bin is one
    pixel), and every static size inside `builtin_pooling()` (how the TFLite
    exporter traces); other sizes take a gather path that propagates the NaN.
    JAX: windows of at most 4 rows (elementwise maxima) propagate NaN; on
    longer windows XLA's CPU max reduction may skip it (seen on 56x56 maps)
    or propagate it (32x32).

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
            raise ArgumentError(
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

    def near_identity_weights(self):
        return self.kernel, self.bias

    def pool(self, inputs, fast=True):
        """The `pool_size x pool_size` adaptive max pool of `inputs` (see `adaptive_max_pool`)."""
        return adaptive_max_pool(inputs, self.pool_size, self.spatial_axes, fast=fast)

    def gate(self, inputs, fast=True):
        """The attention gate, float32, shaped to broadcast over `inputs`."""
        axes = self.spatial_axes
        pooled = self.pool(inputs, fast=fast)
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
