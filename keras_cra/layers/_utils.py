"""Argument checks shared by the attention layers."""

import keras

from keras_cra.errors import ArgumentError


def standardize_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ArgumentError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    return data_format


def channel_axis(data_format):
    return -1 if data_format == "channels_last" else 1


def channels_of(input_shape, data_format):
    """The channel count of a rank-4 `input_shape`, with clear errors."""
    if input_shape is None or len(input_shape) != 4:
        raise ArgumentError(
            "Input must be a rank-4 tensor (batch, height, width, channels) "
            "or (batch, channels, height, width). "
            f"Received: input_shape={input_shape}"
        )
    channels = input_shape[channel_axis(data_format)]
    if channels is None:
        raise ArgumentError(
            "The channel dimension of the input must be known when the layer "
            f"is built (data_format={data_format!r}). "
            f"Received: input_shape={input_shape}"
        )
    return int(channels)


def fresh_initializer(initializer):
    """A new instance of `initializer` for one weight.

    An unseeded Keras initializer instance draws its seed once, when it is
    made, and returns the same values on every call; shared between weights
    it makes them start equal. A copy made from the config draws a new seed
    (from Python's `random`, so `keras.utils.set_random_seed` makes it
    reproducible); a seeded initializer keeps its seed, as in Keras' layers.
    Plain functions are returned as they are.
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer
