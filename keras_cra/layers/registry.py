"""Attention layers by name."""

import keras

from keras_cra.errors import ArgumentError
from keras_cra.layers.cra import ChannelReassessmentAttention
from keras_cra.layers.eca import EfficientChannelAttention
from keras_cra.layers.se import SqueezeExcitation

ATTENTIONS = {
    "cra": ChannelReassessmentAttention,
    "se": SqueezeExcitation,
    "eca": EfficientChannelAttention,
}


def attention_choices():
    """Every name `attention` accepts on a command line: the registered ones, then `none`."""
    return sorted(ATTENTIONS) + ["none"]


def canonical_attention_name(attention):
    """Normalise an attention name (`None` and `"none"` mean no attention)."""
    if attention is None:
        return None
    if isinstance(attention, str):
        key = attention.lower()
        if key == "none":
            return None
        if key in ATTENTIONS:
            return key
    raise ArgumentError(
        "`attention` must be one of "
        f"{sorted(ATTENTIONS) + ['none', None]} or a keras Layer. "
        f"Received: attention={attention!r}"
    )


def get_attention(attention, **kwargs):
    """Returns a new attention layer, or `None` for no attention.

    Args:
        attention: `"cra"`, `"se"`, `"eca"`, `None`/`"none"`, or a Keras
            layer instance (a fresh copy is made from its config, so one
            instance can serve as a template for many blocks).
        **kwargs: arguments of the layer, e.g. `pool_size=7` or `name=...`.

    Returns:
        A new `keras.layers.Layer`, or `None`.

    Example:

    >>> keras_cra.layers.get_attention("cra", pool_size=5).pool_size
    5
    """
    if isinstance(attention, keras.layers.Layer):
        config = attention.get_config()
        config.update(kwargs)
        return attention.__class__.from_config(config)
    name = canonical_attention_name(attention)
    if name is None:
        return None
    return ATTENTIONS[name](**kwargs)
