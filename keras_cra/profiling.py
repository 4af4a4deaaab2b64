"""Analytic multiply-accumulate (MAC) counts per layer type.

Counts what papers count as "FLOPs" for ResNets (multiply-adds of
convolutions and dense layers), plus the multiplies of attention layers, so
CRA / SE / ECA can be compared with the same rule. BatchNorm, ReLU, pooling
and additions are not counted (they are folded or negligible).
"""

import numpy as np
import keras

from keras_cra.layers import (
    ChannelReassessmentAttention,
    EfficientChannelAttention,
    SqueezeExcitation,
)


def _hw_c(shape, data_format="channels_last"):
    if data_format == "channels_last":
        return int(np.prod(shape[1:-1])), int(shape[-1])
    return int(np.prod(shape[2:])), int(shape[1])


def layer_macs(layer):
    if isinstance(layer, keras.layers.Conv2D):
        hw, cout = _hw_c(layer.output.shape, layer.data_format)
        _, cin = _hw_c(layer.input.shape, layer.data_format)
        kh, kw = layer.kernel_size
        return hw * cout * kh * kw * cin // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    if isinstance(layer, ChannelReassessmentAttention):
        hw, c = _hw_c(layer.input.shape, layer.data_format)
        return c * layer.pool_size**2 + hw * c  # depthwise reduction + gating
    if isinstance(layer, SqueezeExcitation):
        hw, c = _hw_c(layer.input.shape, layer.data_format)
        return 2 * int(np.prod(layer.squeeze_kernel.shape)) + hw * c
    if isinstance(layer, EfficientChannelAttention):
        hw, c = _hw_c(layer.input.shape, layer.data_format)
        return c * int(layer.kernel.shape[0]) + hw * c
    return 0


def count_macs(model):
    """Total MACs of one forward pass of `model` for one image."""
    return int(sum(layer_macs(l) for l in model.layers))


def count_parameters(model):
    """Trainable parameters (what PyTorch counts; BN running stats excluded)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
