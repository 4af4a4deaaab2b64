"""The shared base of channel attention layers (CRA, SE, ECA)."""

import keras
from keras import ops

from keras_cra.errors import ArgumentError
from keras_cra.layers import _utils


class ChannelGate(keras.layers.Layer):
    """Base of layers that multiply a 4D input by a per-channel gate in (0, 1).

    A subclass builds its weights with `add_kernel` / `add_bias` (each with a
    fresh initializer, the layer's regularizer and constraint), returns the
    float32 gate from `gate(inputs)` shaped to broadcast over the input, and
    states its multiply-accumulates in `macs(input_shape)`. The gate math
    runs in float32 under mixed precision; the output has the input's dtype.

    Args:
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        kernel_initializer, bias_initializer: initializers of the kernels
            and biases.
        kernel_regularizer, bias_regularizer: optional regularizers.
        kernel_constraint, bias_constraint: optional constraints.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        data_format=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_format = _utils.standardize_data_format(data_format)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def spatial_axes(self):
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def channels(self, input_shape):
        """The channel count of `input_shape`; fixes it in the layer's InputSpec."""
        channels = _utils.channels_of(input_shape, self.data_format)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={_utils.channel_axis(self.data_format): channels}
        )
        return channels

    def add_kernel(self, name, shape, initializer=None):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer or _utils.fresh_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def add_bias(self, name, shape):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=_utils.fresh_initializer(self.bias_initializer),
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def expand_to_input(self, gate):
        """`(N, C)` -> shaped to broadcast over the input."""
        a, b = self.spatial_axes
        return ops.expand_dims(ops.expand_dims(gate, a), b)

    def gate(self, inputs):
        raise NotImplementedError

    def macs(self, input_shape):
        """Multiply-accumulates of one call on one image of `input_shape` (batch first)."""
        raise NotImplementedError

    # sigmoid(10) = 0.99995: the gate a near-identity start gives.
    NEAR_IDENTITY_BIAS = 10.0
    # Why a gate without a final bias cannot start near 1 (for its error message).
    NO_NEAR_IDENTITY = "its gate has no bias to raise"

    def start_near_identity(self, bias=None):
        """Sets the (built) layer's weights so that its gate is about 1 for every input:
        `x -> ~x`, so a pretrained network with this gate added computes almost the
        same function at step 0. A gate with a final bias does it with a zero last
        kernel and a large bias (`bias`, default `NEAR_IDENTITY_BIAS`); a subclass
        names those weights in `near_identity_weights()`.

        Raises:
            ValueError: if the gate has no bias to start at 1.
        """
        kernel, last_bias = self.near_identity_weights()
        if last_bias is None:
            raise ArgumentError(
                f"`near_identity=True` needs a gate with a bias to start at 1; "
                f"{type(self).__name__} has none ({self.NO_NEAR_IDENTITY}). "
                f"Received: attention={type(self).__name__}"
            )
        kernel.assign(ops.zeros_like(kernel))
        last_bias.assign(ops.full_like(last_bias, self.NEAR_IDENTITY_BIAS if bias is None else bias))

    def near_identity_weights(self):
        """`(kernel, bias)`: the weights of the gate's last affine step (`bias` `None`
        when it has none)."""
        raise NotImplementedError

    def spatial_size_and_channels(self, input_shape):
        """`(H * W, C)` of a batch-first `input_shape`."""
        h, w = (input_shape[a] for a in self.spatial_axes)
        return int(h) * int(w), int(input_shape[_utils.channel_axis(self.data_format)])

    def call(self, inputs):
        return inputs * ops.cast(self.gate(inputs), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "data_format": self.data_format,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config
