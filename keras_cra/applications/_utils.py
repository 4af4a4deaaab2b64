"""Argument checks shared by the zoo's builders (public Keras API only)."""

import keras

from keras_cra.errors import ArgumentError


def input_shape_of(input_shape, default_size, min_size, data_format, require_flatten,
                   pretrained):
    """The model's input shape, as `keras.applications` works it out.

    `None` gives the default shape with `include_top` (or pretrained weights
    with a top), else a fully convolutional `(None, None, 3)`. Sizes below
    `min_size`, and other channel counts than 3 with pretrained weights, are
    errors.
    """
    channels_first = data_format == "channels_first"
    default = (3, default_size, default_size) if channels_first else (
        default_size, default_size, 3)
    if input_shape is None:
        if require_flatten:
            return default
        return (3, None, None) if channels_first else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ArgumentError(f"`input_shape` must be a tuple of three integers. "
                         f"Received: input_shape={input_shape}")
    channels = input_shape[0] if channels_first else input_shape[-1]
    spatial = input_shape[1:] if channels_first else input_shape[:2]
    if pretrained and require_flatten and input_shape != default:
        raise ArgumentError(f"With `include_top=True` and pretrained weights, `input_shape` should "
                         f"be {default}. Received: input_shape={input_shape}")
    if pretrained and channels != 3:
        raise ArgumentError(f"With pretrained weights the input must have 3 channels. "
                         f"Received: input_shape={input_shape}")
    if any(s is not None and s < min_size for s in spatial):
        raise ArgumentError(f"Input size must be at least {min_size}x{min_size}. "
                         f"Received: input_shape={input_shape}")
    if require_flatten and None in input_shape:
        raise ArgumentError("With `include_top=True`, `input_shape` must be static. "
                         f"Received: input_shape={input_shape}")
    return input_shape


def validate_classifier_activation(classifier_activation, pretrained):
    """With pretrained weights and a top, only `None` or `"softmax"` make sense."""
    if not pretrained:
        return
    activation = keras.activations.get(classifier_activation)
    if activation not in (keras.activations.get("softmax"), keras.activations.get(None)):
        raise ArgumentError(
            "Only `None` and `softmax` activations are allowed for the "
            "`classifier_activation` argument when using pretrained weights, with "
            f"`include_top=True`. Received: classifier_activation={classifier_activation}"
        )


def model_input(input_tensor, input_shape):
    """The model's input tensor, as `keras.applications` builders make it."""
    if input_tensor is None:
        return keras.layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor
