"""Analytic multiply-accumulate (MAC) counts per layer type.

Counts what papers count as "FLOPs" for ResNets (multiply-adds of
convolutions and dense layers), plus the multiplies of attention layers, so
CRA / SE / ECA can be compared with the same rule. BatchNorm, ReLU, pooling
and additions are not counted (they are folded or negligible).
"""

import keras
import numpy as np

from keras_cra.errors import ArgumentError
from keras_cra.layers.base import ChannelGate


def _hw_c(shape, data_format="channels_last"):
    if data_format == "channels_last":
        return int(np.prod(shape[1:-1])), int(shape[-1])
    return int(np.prod(shape[2:])), int(shape[1])


# Layers without multiply-accumulates under this rule (normalization folds into
# the convolutions; pooling, activations, padding and merges are not counted).
_NO_MACS = (
    keras.layers.InputLayer, keras.layers.BatchNormalization, keras.layers.Activation,
    keras.layers.ReLU, keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D, keras.layers.Add, keras.layers.Multiply,
    keras.layers.Concatenate, keras.layers.Flatten, keras.layers.Reshape,
    keras.layers.Dropout, keras.layers.Rescaling, keras.layers.Normalization,
)


def layer_macs(layer):
    """MACs of one call of `layer` (inside a built functional model) for one image.

    Raises:
        ValueError: for a layer type this rule does not know, rather than
            silently counting it as 0.
    """
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        hw, c = _hw_c(layer.output.shape, layer.data_format)
        kh, kw = layer.kernel_size
        return hw * c * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        hw, cout = _hw_c(layer.output.shape, layer.data_format)
        _, cin = _hw_c(layer.input.shape, layer.data_format)
        kh, kw = layer.kernel_size
        return hw * cout * kh * kw * cin // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    if isinstance(layer, ChannelGate):
        return int(layer.macs(layer.input.shape))
    if isinstance(layer, _NO_MACS):
        return 0
    raise ArgumentError(
        f"No MAC rule for layer '{layer.name}' ({layer.__class__.__name__}); add one to "
        f"keras_cra.profiling.layer_macs. Received: layer={layer.name!r}"
    )


def count_macs(model):
    """Total MACs of one forward pass of `model` for one image."""
    return int(sum(layer_macs(l) for l in model.layers))


def count_parameters(model):
    """Trainable parameters (what PyTorch counts; BN running stats excluded)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
