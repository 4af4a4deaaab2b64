"""CRA-MobileNetV2: keras.applications' MobileNetV2 with CRA at every residual add."""

import os

import keras
import numpy as np

from keras_cra.applications import _utils, zoo
from keras_cra.applications.imagenet import IMAGENET_MEAN, IMAGENET_STD
from keras_cra.attach import add_attention, copy_model
from keras_cra.backbone import as_backbone
from keras_cra.errors import ArgumentError
from keras_cra.layers.registry import canonical_attention_name

# keras.applications.MobileNetV2's layers at strides 4, 8, 16 and 32.
PYRAMID_LAYERS = {"P2": "block_3_expand_relu", "P3": "block_6_expand_relu",
                  "P4": "block_13_expand_relu", "P5": "out_relu"}


def CRAMobileNetV2(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    alpha=1.0,
    attention="cra",
    attention_kwargs=None,
):
    """Instantiates MobileNetV2 with Channel Reassessment Attention.

    The network is `keras.applications.MobileNetV2` (same layers, same layer
    names), with an attention layer on the residual branch of each of its 10
    inverted-residual additions (`keras_cra.add_attention`). Its inputs are
    preprocessed like every keras_cra model ("torch" mode: /255, ImageNet
    mean and std, `keras_cra.applications.preprocess_input`); a first
    `Rescaling` layer (`torch_to_tf_inputs`) maps them to the [-1, 1] range
    MobileNetV2 was trained on, so Keras' ImageNet weights work unchanged.

    Args:
        include_top, input_tensor, input_shape, pooling, classes,
        classifier_activation: as in `keras.applications.MobileNetV2`.
        weights: `None` (random initialization), `"imagenet"` (Keras'
            ImageNet MobileNetV2 weights, fetched by Keras; the attention
            gates then start near identity, so the pretrained network
            computes almost the same function), or the path to a
            `.weights.h5` file of this architecture.
        name: the model's name. Defaults to `"cra_mobilenetv2_<alpha>"`
            (`"mobilenetv2_<alpha>"` without attention).
        alpha: the width multiplier of MobileNetV2.
        attention: `"cra"` (default), `"se"`, `"eca"`, `None`, or a layer
            used as a template.
        attention_kwargs: optional arguments of the attention layers.

    Returns:
        A Keras `Model` instance.

    Example:

    >>> model = keras_cra.applications.CRAMobileNetV2(weights=None, input_shape=(96, 96, 3))
    >>> model.get_layer("block_2_cra")
    <ChannelReassessmentAttention ...>

    Reference:
        - [Shen & Wen, Convolutional Neural Network optimization via Channel
          Reassessment Attention module, 2020](https://arxiv.org/abs/2010.05605)
        - [Sandler et al., MobileNetV2: Inverted Residuals and Linear
          Bottlenecks, CVPR 2018](https://arxiv.org/abs/1801.04381)
    """
    suffix = "attention" if isinstance(attention, keras.layers.Layer) else (
        canonical_attention_name(attention))
    has_attention = suffix is not None
    if attention_kwargs and not has_attention:
        raise ArgumentError("`attention_kwargs` were given but `attention` is None. "
                         f"Received: attention_kwargs={attention_kwargs!r}")
    pretrained = weights == "imagenet"
    if weights is not None and not pretrained and not str(weights).endswith(".weights.h5"):
        raise ArgumentError("`weights` must be None, 'imagenet' or the path to a .weights.h5 "
                         f"file. Received: weights={weights!r}")
    if weights is not None and not pretrained and not os.path.isfile(weights):
        raise ArgumentError("The `weights` argument should be either `None` (random "
                         "initialization), 'imagenet', or the path to the weights file to be "
                         f"loaded; the file does not exist. Received: weights={weights!r}")
    data_format = keras.config.image_data_format()
    channels_first = data_format == "channels_first"
    if input_tensor is None or not keras.backend.is_keras_tensor(input_tensor):
        input_shape = _utils.input_shape_of(input_shape, 224, 32, data_format,
                                            require_flatten=include_top, pretrained=pretrained)
    inputs = _utils.model_input(input_tensor, input_shape)
    # MobileNetV2 is built on an Input of its own, then copied with attention onto `inputs`:
    # every layer of the result is called once, on the caller's graph.
    private = keras.Input(batch_shape=inputs.shape, dtype=inputs.dtype)
    channels = inputs.shape[1 if channels_first else -1]
    x = torch_to_tf_inputs(channels, channels_first)(private)
    base = keras.applications.MobileNetV2(
        input_tensor=x, alpha=alpha, include_top=include_top,
        weights="imagenet" if pretrained else None, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation,
    )
    name = name or f"{suffix + '_' if suffix else ''}mobilenetv2_{alpha:g}"
    plain = keras.Model(private, base.output, name=name)
    if has_attention:
        model = add_attention(plain, attention, attention_kwargs, near_identity=pretrained,
                              input_tensors=inputs)
    else:
        model = copy_model(plain, input_tensors=inputs)
    if not include_top:
        model = as_backbone(model, PYRAMID_LAYERS)
    if weights is not None and not pretrained:
        model.load_weights(weights)
    return model


def torch_to_tf_inputs(channels, channels_first=False):
    """The `Rescaling` from "torch" inputs (x/255, ImageNet mean and std) to MobileNetV2's
    x/127.5 - 1, per channel for RGB; other channel counts use the channel-averaged
    statistics, as `keras_cra.data.normalize` does for them."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    if channels != 3:
        mean, std = np.full(channels or 1, mean.mean()), np.full(channels or 1, std.mean())
    shape = (-1, 1, 1) if channels_first else (-1,)
    return keras.layers.Rescaling((2 * std).reshape(shape).tolist(),
                                  (2 * mean - 1).reshape(shape).tolist(),
                                  name="torch_to_tf_inputs")


zoo.register(zoo.ZooEntry(
    name="CRAMobileNetV2", builder=CRAMobileNetV2, style="imagenet", default_size=224,
    min_size=32,
))
