"""Squeeze-and-Excitation (SE)."""

import keras
from keras import ops

from keras_cra.layers import _utils


@keras.saving.register_keras_serializable(package="keras_cra")
class SqueezeExcitation(keras.layers.Layer):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(
                "`reduction` must be a positive integer. "
                f"Received: reduction={reduction!r}"
            )
        self.reduction = reduction
        self.data_format = _utils.standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = _utils.channels_of(input_shape, self.data_format)
        hidden = max(1, channels // self.reduction)
        self.squeeze_kernel = self.add_weight(
            name="squeeze_kernel",
            shape=(channels, hidden),
            initializer=_utils.fresh_initializer(self.kernel_initializer),
        )
        self.squeeze_bias = self.add_weight(
            name="squeeze_bias",
            shape=(hidden,),
            initializer=_utils.fresh_initializer(self.bias_initializer),
        )
        self.excite_kernel = self.add_weight(
            name="excite_kernel",
            shape=(hidden, channels),
            initializer=_utils.fresh_initializer(self.kernel_initializer),
        )
        self.excite_bias = self.add_weight(
            name="excite_bias",
            shape=(channels,),
            initializer=_utils.fresh_initializer(self.bias_initializer),
        )

    def call(self, inputs):
        axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        pooled = ops.cast(ops.mean(inputs, axis=axes), "float32")
        h = ops.relu(
            ops.matmul(pooled, ops.cast(self.squeeze_kernel, "float32"))
            + ops.cast(self.squeeze_bias, "float32")
        )
        gate = ops.sigmoid(
            ops.matmul(h, ops.cast(self.excite_kernel, "float32"))
            + ops.cast(self.excite_bias, "float32")
        )
        gate = ops.expand_dims(ops.expand_dims(gate, axes[0]), axes[1])
        return inputs * ops.cast(gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "data_format": self.data_format,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config
SE = SqueezeExcitation
