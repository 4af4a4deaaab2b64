"""CRA ResNet / ResNeXt models, mirroring `keras.applications`.

Architectures follow the CRA authors' code, which is torchvision's ResNet:
the stride sits on the 3x3 convolution, convolutions have no bias,
BatchNorm epsilon is 1e-5, the stem is a 7x7/2 convolution and a 3x3/2 max
pool, and padding is explicit (PyTorch's symmetric padding) so weights carry
over from PyTorch exactly. The attention layer sits after the last
convolution + BatchNorm of every block, before the residual addition.

CIFAR-style models (He et al. 2016, 6n+2 layers, 16/32/64 filters) use a
1x1 convolution + BatchNorm projection on the shortcut where the shape
changes (option B).
"""

import keras
from keras import layers

from keras_cra.applications import _utils, zoo
from keras_cra.applications import weights as weights_lib
from keras_cra.backbone import Backbone
from keras_cra.errors import ArgumentError
from keras_cra.layers.registry import canonical_attention_name, get_attention

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1

# Every model is a row of this table.
#   style: "imagenet" (7x7 stem, 4 stages) or "cifar" (3x3 stem, 3 stages)
#   block: "basic" or "bottleneck"; depths: blocks per stage
#   groups / width_per_group: ResNeXt cardinality and width (bottleneck)
MODELS = {
    "CRAResNet18": dict(style="imagenet", block="basic", depths=(2, 2, 2, 2)),
    "CRAResNet34": dict(style="imagenet", block="basic", depths=(3, 4, 6, 3)),
    "CRAResNet50": dict(style="imagenet", block="bottleneck", depths=(3, 4, 6, 3)),
    "CRAResNet101": dict(style="imagenet", block="bottleneck", depths=(3, 4, 23, 3)),
    "CRAResNet152": dict(style="imagenet", block="bottleneck", depths=(3, 8, 36, 3)),
    "CRAResNeXt50": dict(
        style="imagenet", block="bottleneck", depths=(3, 4, 6, 3),
        groups=32, width_per_group=4,
    ),
    "CRAResNeXt101": dict(
        style="imagenet", block="bottleneck", depths=(3, 4, 23, 3),
        groups=32, width_per_group=4,
    ),
    "CRAResNet20": dict(style="cifar", block="basic", depths=(3, 3, 3)),
    "CRAResNet32": dict(style="cifar", block="basic", depths=(5, 5, 5)),
    "CRAResNet56": dict(style="cifar", block="basic", depths=(9, 9, 9)),
    "CRAResNet110": dict(style="cifar", block="basic", depths=(18, 18, 18)),
}

STYLES = {
    # default input size, minimum input size, stage filters, first stage index
    "imagenet": dict(default_size=224, min_size=32, filters=(64, 128, 256, 512)),
    "cifar": dict(default_size=32, min_size=8, filters=(16, 32, 64)),
}

def conv_initializer():
    """torchvision's kaiming_normal_(mode="fan_out"), a new instance per layer.

    An unseeded initializer instance returns the same values on every call,
    so sharing one would start every same-shaped kernel equal.
    """
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _bn(x, name):
    axis = -1 if keras.config.image_data_format() == "channels_last" else 1
    return layers.BatchNormalization(
        axis=axis, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )(x)


def _conv(x, filters, kernel_size, strides, name, groups=1):
    if kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
    return layers.Conv2D(
        filters, kernel_size, strides=strides, groups=groups, use_bias=False,
        kernel_initializer=conv_initializer(), name=name + "_conv",
    )(x)


def _attend(x, attention, attention_kwargs, name):
    layer = get_attention(attention, name=name, **attention_kwargs)
    return x if layer is None else layer(x)


def _attention_suffix(attention):
    if isinstance(attention, keras.layers.Layer):
        return "attention"
    return canonical_attention_name(attention)


def _block(x, spec, filters, stride, name, attention, attention_kwargs):
    """One residual block; layer names follow keras.applications.resnet."""
    channel_axis = -1 if keras.config.image_data_format() == "channels_last" else 1
    in_channels = x.shape[channel_axis]
    if spec["block"] == "bottleneck":
        groups = spec.get("groups", 1)
        width = int(filters * (spec.get("width_per_group", 64) / 64.0)) * groups
        out_channels = filters * 4
        y = _conv(x, width, 1, 1, name + "_1")
        y = layers.Activation("relu", name=name + "_1_relu")(_bn(y, name + "_1_bn"))
        y = _conv(y, width, 3, stride, name + "_2", groups=groups)
        y = layers.Activation("relu", name=name + "_2_relu")(_bn(y, name + "_2_bn"))
        y = _bn(_conv(y, out_channels, 1, 1, name + "_3"), name + "_3_bn")
    else:
        out_channels = filters
        y = _conv(x, filters, 3, stride, name + "_1")
        y = layers.Activation("relu", name=name + "_1_relu")(_bn(y, name + "_1_bn"))
        y = _bn(_conv(y, filters, 3, 1, name + "_2"), name + "_2_bn")
    suffix = _attention_suffix(attention)
    if suffix is not None:
        y = _attend(y, attention, attention_kwargs, f"{name}_{suffix}")
    if stride != 1 or in_channels != out_channels:
        shortcut = _bn(_conv(x, out_channels, 1, stride, name + "_0"), name + "_0_bn")
    else:
        shortcut = x
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.Activation("relu", name=name + "_out")(y)


def stage_output_names(model_name):
    """Names of the layers giving each stage's output (C2..C5 / C2..C4)."""
    spec = MODELS[model_name]
    first = 2
    return [
        f"conv{first + i}_block{depth}_out" for i, depth in enumerate(spec["depths"])
    ]


def pyramid_layers(model_name):
    """`{"P{n}": stage output layer}`: level n is stride 2**n (C2..C5 of an ImageNet-style
    model are P2..P5; a CIFAR-style model's stages, at strides 1, 2, 4, are P0..P2)."""
    first = 2 if MODELS[model_name]["style"] == "imagenet" else 0
    return {f"P{first + i}": name for i, name in enumerate(stage_output_names(model_name))}


def ResNet(
    model_name,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    attention="cra",
    attention_kwargs=None,
):
    """Builds any model of `MODELS` by name (the public builders call this)."""
    if model_name not in MODELS:
        raise ArgumentError(
            f"Unknown model. Valid names: {sorted(MODELS)}. "
            f"Received: model_name={model_name!r}"
        )
    spec = MODELS[model_name]
    style = STYLES[spec["style"]]
    attention_name = _attention_suffix(attention)  # validates `attention`
    attention_kwargs = dict(attention_kwargs or {})
    if not isinstance(attention_kwargs, dict):
        raise ArgumentError(
            "`attention_kwargs` must be a dict or None. "
            f"Received: attention_kwargs={attention_kwargs!r}"
        )
    if attention_name is None and attention_kwargs:
        raise ArgumentError(
            "`attention_kwargs` were given but `attention` is None. "
            f"Received: attention_kwargs={attention_kwargs!r}"
        )
    classes, input_shape = weights_lib.defaults_for(weights, model_name, classes, input_shape,
                                                    input_tensor)
    weights_lib.validate_weights_argument(
        weights, model_name, include_top, classes, classifier_activation, attention_name
    )
    if pooling not in (None, "avg", "max"):
        raise ArgumentError(
            "`pooling` must be one of None, 'avg', 'max'. "
            f"Received: pooling={pooling!r}"
        )

    input_shape = _utils.input_shape_of(
        input_shape,
        default_size=style["default_size"],
        min_size=style["min_size"],
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
        # ImageNet weights fix the input (224x224x3 with a top); weights registered with an
        # input shape (small, fully convolutional nets) take any size.
        pretrained=weights_lib.is_pretrained_name(weights) and (
            weights_lib.WEIGHTS.get((model_name, weights)) is None
            or weights_lib.WEIGHTS[(model_name, weights)].input_shape is None),
    )
    img_input = _utils.model_input(input_tensor, input_shape)

    if spec["style"] == "imagenet":
        x = _conv(img_input, 64, 7, 2, "conv1")
        x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    else:
        x = _conv(img_input, 16, 3, 1, "conv1")
        x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))

    for i, (depth, filters) in enumerate(zip(spec["depths"], style["filters"])):
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            x = _block(
                x, spec, filters, stride, f"conv{i + 2}_block{j + 1}",
                attention, attention_kwargs,
            )

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        _utils.validate_classifier_activation(classifier_activation, weights is not None)
        x = layers.Dense(
            classes, activation=classifier_activation, name="predictions"
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    if name is None:
        name = default_name(model_name, attention_name)
    if include_top:
        model = keras.Model(inputs, x, name=name)
    else:
        model = Backbone(inputs, x, name=name, pyramid_layers=pyramid_layers(model_name))
    if weights is not None:
        weights_lib.load_weights(
            model, weights, model_name,
            build_reference=lambda attention, classes: ResNet(
                model_name, include_top=True, attention=attention, classes=classes,
                classifier_activation=None),
        )
    return model


def default_name(model_name, attention_name):
    base = model_name[len("CRA"):].lower()
    return base if attention_name is None else f"{attention_name}_{base}"


def feature_extractor(model, model_name=None):
    """Returns a model mapping the input to the multi-scale stage outputs.

    For ImageNet-style models: `{"C2": stride 4, "C3": 8, "C4": 16, "C5": 32}`;
    for CIFAR-style models `C2..C4` (stride 1, 2, 4). Use it with detection
    or segmentation heads.

    Args:
        model: a model built by a `keras_cra.applications` builder
            (any `include_top`).
        model_name: its table name (e.g. `"CRAResNet50"`); inferred from the
            layer names if `None`.
    """
    names = [l.name for l in model.layers]
    depths = []
    stage = 2
    while any(n.startswith(f"conv{stage}_block") for n in names):
        depths.append(
            max(int(n.split("_")[1][5:]) for n in names if n.startswith(f"conv{stage}_block"))
        )
        stage += 1
    if not depths:
        raise ArgumentError(
            "`model` has no `convN_blockM_out` layers; build it with a "
            f"keras_cra.applications builder. Received: model={model.name!r}"
        )
    outputs = {
        f"C{2 + i}": model.get_layer(f"conv{2 + i}_block{d}_out").output
        for i, d in enumerate(depths)
    }
    return keras.Model(model.inputs, outputs, name=model.name + "_features")


_DOC = """Instantiates the {model_name} architecture{attention_note}.

    Architecture: {description}.

    Args:
        include_top: whether to include the fully-connected layer at the top
            of the network. Defaults to `True`.
        weights: `None` (random initialization), the name of registered
            pretrained weights (see `keras_cra.applications.weights`), or the
            path to a `.weights.h5` / `.keras` file. Defaults to `None`.
        input_tensor: optional Keras tensor (i.e. output of `layers.Input()`)
            to use as image input for the model.
        input_shape: optional shape tuple, only to be specified if
            `include_top` is `False` (otherwise the input shape has to be
            `{default_shape}`). It should have exactly 3 input channels with
            pretrained weights, and width and height no smaller than
            {min_size}. `(None, None, 3)` gives a fully convolutional model.
        pooling: optional pooling mode for feature extraction when
            `include_top` is `False`: `None` (4D output of the last block),
            `"avg"` (global average pooling) or `"max"` (global max pooling).
        classes: optional number of classes to classify images into, only
            to be specified if `include_top` is `True` and no pretrained
            ImageNet weights are loaded. Defaults to `1000`.
        classifier_activation: a `str` or callable, the activation of the top
            layer. Ignored unless `include_top=True`. Set
            `classifier_activation=None` to return the logits. With
            pretrained weights it can only be `None` or `"softmax"`.
        name: the name of the model (string). Defaults to
            `"{default_name}"` (the attention name, then the backbone).
        attention: `"cra"` (default), `"se"`, `"eca"` or `None` for the plain
            backbone (the paper's ablation is one argument away), or a layer
            instance used as a template for every block.
        attention_kwargs: optional dict of arguments of the attention layer,
            e.g. `{{"pool_size": 5}}`.

    Returns:
        A Keras `Model` instance.

    Example:

    >>> model = keras_cra.applications.{model_name}(
    ...     weights=None, classes=10, input_shape={example_shape})
    >>> model.get_layer("conv2_block1_cra")
    <ChannelReassessmentAttention ...>

    Reference:
        - [Shen & Wen, Convolutional Neural Network optimization via Channel
          Reassessment Attention module, 2020](https://arxiv.org/abs/2010.05605)
        - [He et al., Deep Residual Learning for Image Recognition, CVPR 2016](
          https://arxiv.org/abs/1512.03385){resnext_ref}
"""


def _describe(spec):
    block = "bottleneck" if spec["block"] == "bottleneck" else "basic"
    text = f"{spec['style']}-style ResNet, {block} blocks, depths {spec['depths']}"
    if spec.get("groups"):
        text += f", ResNeXt {spec['groups']}x{spec['width_per_group']}d"
    return text


def _make_builder(model_name):
    spec = MODELS[model_name]

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=None,
        attention="cra",
        attention_kwargs=None,
    ):
        return ResNet(
            model_name,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            attention=attention,
            attention_kwargs=attention_kwargs,
        )

    size = STYLES[spec["style"]]["default_size"]
    builder.__name__ = builder.__qualname__ = model_name
    builder.__module__ = __name__
    builder.__doc__ = _DOC.format(
        model_name=model_name,
        attention_note=" with Channel Reassessment Attention",
        description=_describe(spec),
        default_shape=f"({size}, {size}, 3)",
        min_size=STYLES[spec["style"]]["min_size"],
        default_name=default_name(model_name, "cra"),
        example_shape="(96, 96, 3)" if spec["style"] == "imagenet" else "(32, 32, 3)",
        resnext_ref=(
            "\n        - [Xie et al., Aggregated Residual Transformations for Deep "
            "Neural Networks, CVPR 2017](https://arxiv.org/abs/1611.05431)"
            if spec.get("groups") else ""
        ),
    )
    return builder


CRAResNet18 = _make_builder("CRAResNet18")
CRAResNet34 = _make_builder("CRAResNet34")
CRAResNet50 = _make_builder("CRAResNet50")
CRAResNet101 = _make_builder("CRAResNet101")
CRAResNet152 = _make_builder("CRAResNet152")
CRAResNeXt50 = _make_builder("CRAResNeXt50")
CRAResNeXt101 = _make_builder("CRAResNeXt101")
CRAResNet20 = _make_builder("CRAResNet20")
CRAResNet32 = _make_builder("CRAResNet32")
CRAResNet56 = _make_builder("CRAResNet56")
CRAResNet110 = _make_builder("CRAResNet110")

BUILDERS = {
    builder.__name__: builder
    for builder in (CRAResNet18, CRAResNet34, CRAResNet50, CRAResNet101, CRAResNet152,
                    CRAResNeXt50, CRAResNeXt101, CRAResNet20, CRAResNet32, CRAResNet56,
                    CRAResNet110)
}
assert set(BUILDERS) == set(MODELS), "every row of MODELS needs its builder line above"

for _name, _builder in BUILDERS.items():
    _style = STYLES[MODELS[_name]["style"]]
    zoo.register(zoo.ZooEntry(
        name=_name,
        family="resnet",
        builder=_builder,
        style=MODELS[_name]["style"],
        default_size=_style["default_size"],
        min_size=_style["min_size"],
        preprocessing="torch",
        feature_levels=tuple(f"C{2 + i}" for i in range(len(MODELS[_name]["depths"]))),
    ))


def preprocess_input(x, data_format=None):
    """Preprocesses RGB images as the CRA authors did ("torch" mode).

    Scales pixels from [0, 255] to [0, 1], then normalises each channel with
    the ImageNet mean `(0.485, 0.456, 0.406)` and std
    `(0.229, 0.224, 0.225)`.

    Args:
        x: float or uint8 NumPy array or tensor, 3D or 4D, RGB, values in
            [0, 255].
        data_format: optional image data format (default: the Keras config).

    Returns:
        Preprocessed float32 array or tensor.
    """
    return keras.applications.imagenet_utils.preprocess_input(
        x, data_format=data_format, mode="torch"
    )


def decode_predictions(preds, top=5, class_index_path=None):
    """Decodes ImageNet predictions into `(class_id, class_name, score)`.

    Args:
        preds: NumPy array of shape `(samples, 1000)`.
        top: how many top guesses to return per sample. Defaults to `5`.
        class_index_path: optional path to a local `imagenet_class_index.json`
            (`{"0": ["n01440764", "tench"], ...}`). By default the file is
            fetched once through `keras.utils.get_file` into the Keras cache,
            exactly as `keras.applications` does.

    Returns:
        A list (one per sample) of lists of `(class_id, class_name, score)`
        tuples, best first.
    """
    from keras_cra.applications import imagenet

    return imagenet.decode_predictions(preds, top=top, class_index_path=class_index_path)
