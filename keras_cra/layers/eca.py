"""Efficient Channel Attention (ECA)."""

import math

import keras
from keras import ops

from keras_cra.layers import _utils


def eca_kernel_size(channels, gamma=2, b=1):
    """ECA's adaptive kernel size: `|log2(C) / gamma + b / gamma|`, made odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@keras.saving.register_keras_serializable(package="keras_cra")
class EfficientChannelAttention(keras.layers.Layer):
    """Efficient Channel Attention (ECA).

    Global average pooling, a 1D convolution across channels (no bias, zero
    padded, kernel size chosen from the channel count unless given), sigmoid,
    and a channel-wise multiplication of the input.

    Args:
        kernel_size: odd positive int, or `None` (default) for ECA's adaptive
            size `|log2(C) / gamma + b / gamma|` rounded to odd.
        gamma: int, ECA's `gamma`. Defaults to `2`.
        b: int, ECA's `b`. Defaults to `1`.
        data_format: string, `"channels_last"` or `"channels_first"`.
            Defaults to `keras.config.image_data_format()`.
        kernel_initializer: initializer of the 1D kernel. Defaults to
            `"glorot_uniform"`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor, `(batch, height, width, channels)` if `channels_last`,
        `(batch, channels, height, width)` if `channels_first`.

    Output shape:
        Same as the input shape.

    Example:

    >>> x = np.random.rand(2, 14, 14, 256).astype("float32")
    >>> keras_cra.layers.EfficientChannelAttention()(x).shape
    (2, 14, 14, 256)

    Reference:
        - [Wang et al., ECA-Net: Efficient Channel Attention for Deep
          Convolutional Neural Networks, CVPR 2020](
          https://arxiv.org/abs/1910.03151)
    """

    def __init__(
        self,
        kernel_size=None,
        gamma=2,
        b=1,
        data_format=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size is not None and (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or kernel_size < 1
            or kernel_size % 2 == 0
        ):
            raise ValueError(
                "`kernel_size` must be None or an odd positive integer. "
                f"Received: kernel_size={kernel_size!r}"
            )
        self.kernel_size = kernel_size
        self.gamma = gamma
        self.b = b
        self.data_format = _utils.standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = _utils.channels_of(input_shape, self.data_format)
        k = self.kernel_size or eca_kernel_size(channels, self.gamma, self.b)
        self._k = k
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, 1, 1),
            initializer=_utils.fresh_initializer(self.kernel_initializer),
        )

    def call(self, inputs):
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        pooled = ops.cast(ops.mean(inputs, axis=axes), "float32")
        # (N, C) -> (N, C, 1): channels become the 1D "length" axis.
        logits = ops.conv(
            ops.expand_dims(pooled, -1),
            ops.cast(self.kernel, "float32"),
            padding="same",
        )
        gate = ops.sigmoid(ops.squeeze(logits, -1))
        gate = ops.expand_dims(ops.expand_dims(gate, axes[0]), axes[1])
        return inputs * ops.cast(gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "gamma": self.gamma,
                "b": self.b,
                "data_format": self.data_format,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
ECA = EfficientChannelAttention
