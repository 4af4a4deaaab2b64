"""Efficient Channel Attention (ECA)."""

import math

import keras
from keras import ops

from keras_cra.errors import ArgumentError
from keras_cra.layers.base import ChannelGate


def eca_kernel_size(channels, gamma=2, b=1):
    """ECA's adaptive kernel size: `|log2(C) / gamma + b / gamma|`, made odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@keras.saving.register_keras_serializable(package="keras_cra")
class EfficientChannelAttention(ChannelGate):
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
        kernel_regularizer: optional regularizer of the 1D kernel.
        kernel_constraint: optional constraint of the 1D kernel.
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
        kernel_regularizer=None,
        kernel_constraint=None,
        **kwargs,
    ):
        super().__init__(
            data_format=data_format,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            kernel_constraint=kernel_constraint,
            **kwargs,
        )
        if kernel_size is not None and (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or kernel_size < 1
            or kernel_size % 2 == 0
        ):
            raise ArgumentError(
                "`kernel_size` must be None or an odd positive integer. "
                f"Received: kernel_size={kernel_size!r}"
            )
        self.kernel_size = kernel_size
        self.gamma = gamma
        self.b = b

    def build(self, input_shape):
        channels = self.channels(input_shape)
        k = self.kernel_size or eca_kernel_size(channels, self.gamma, self.b)
        self.kernel = self.add_kernel("kernel", (k, 1, 1))

    NO_NEAR_IDENTITY = "ECA's gate is sigmoid(0) = 0.5 with a zero kernel"

    def near_identity_weights(self):
        return self.kernel, None

    def gate(self, inputs):
        pooled = ops.cast(ops.mean(inputs, axis=self.spatial_axes), "float32")
        # (N, C) -> (N, C, 1): channels become the 1D "length" axis.
        logits = ops.conv(
            ops.expand_dims(pooled, -1),
            ops.cast(self.kernel, "float32"),
            padding="same",
            data_format="channels_last",  # this (N, C, 1) layout, whatever the global format
        )
        return self.expand_to_input(ops.sigmoid(ops.squeeze(logits, -1)))

    def macs(self, input_shape):
        hw, c = self.spatial_size_and_channels(input_shape)
        return c * int(self.kernel.shape[0]) + hw * c  # 1D conv across channels + gating

    def get_config(self):
        config = super().get_config()
        for key in ("bias_initializer", "bias_regularizer", "bias_constraint"):
            del config[key]  # ECA has no bias
        config.update({"kernel_size": self.kernel_size, "gamma": self.gamma, "b": self.b})
        return config


ECA = EfficientChannelAttention
