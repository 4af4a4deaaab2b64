"""Squeeze-and-Excitation (SE)."""

import keras
from keras import ops

from keras_cra.errors import ArgumentError
from keras_cra.layers.base import ChannelGate


@keras.saving.register_keras_serializable(package="keras_cra")
class SqueezeExcitation(ChannelGate):
    """Squeeze-and-Excitation channel attention.

    Global average pooling, a bottleneck of two fully connected layers
    (`channels // reduction` units with ReLU, then `channels` units with
    sigmoid) and a channel-wise multiplication of the input.

    Args:
        reduction: int, the bottleneck reduction ratio. Defaults to `16`.
        data_format: string, `"channels_last"` or `"channels_first"`.
            Defaults to `keras.config.image_data_format()`.
        kernel_initializer: initializer of both kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of both biases. Defaults to `"zeros"`.
        kernel_regularizer, bias_regularizer: optional regularizers of the
            kernels and biases.
        kernel_constraint, bias_constraint: optional constraints of the
            kernels and biases.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        4D tensor, `(batch, height, width, channels)` if `channels_last`,
        `(batch, channels, height, width)` if `channels_first`.

    Output shape:
        Same as the input shape.

    Example:

    >>> x = np.random.rand(2, 14, 14, 256).astype("float32")
    >>> keras_cra.layers.SqueezeExcitation()(x).shape
    (2, 14, 14, 256)

    Reference:
        - [Hu et al., Squeeze-and-Excitation Networks, CVPR 2018](
          https://arxiv.org/abs/1709.01507)
    """

    def __init__(
        self,
        reduction=16,
        data_format=None,
        kernel_initializer="glorot_uniform",
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
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ArgumentError(
                "`reduction` must be a positive integer. "
                f"Received: reduction={reduction!r}"
            )
        self.reduction = reduction

    def build(self, input_shape):
        channels = self.channels(input_shape)
        hidden = max(1, channels // self.reduction)
        self.squeeze_kernel = self.add_kernel("squeeze_kernel", (channels, hidden))
        self.squeeze_bias = self.add_bias("squeeze_bias", (hidden,))
        self.excite_kernel = self.add_kernel("excite_kernel", (hidden, channels))
        self.excite_bias = self.add_bias("excite_bias", (channels,))

    def near_identity_weights(self):
        return self.excite_kernel, self.excite_bias

    def gate(self, inputs):
        pooled = ops.cast(ops.mean(inputs, axis=self.spatial_axes), "float32")
        h = ops.relu(
            ops.matmul(pooled, ops.cast(self.squeeze_kernel, "float32"))
            + ops.cast(self.squeeze_bias, "float32")
        )
        gate = ops.sigmoid(
            ops.matmul(h, ops.cast(self.excite_kernel, "float32"))
            + ops.cast(self.excite_bias, "float32")
        )
        return self.expand_to_input(gate)

    def macs(self, input_shape):
        hw, c = self.spatial_size_and_channels(input_shape)
        return 2 * c * max(1, c // self.reduction) + hw * c  # two dense layers + gating

    def get_config(self):
        config = super().get_config()
        config["reduction"] = self.reduction
        return config


SE = SqueezeExcitation
