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

import functools
import inspect

import keras
from keras import layers

from keras_cra.applications import _utils, zoo
from keras_cra.applications import weights as weights_lib
from keras_cra.backbone import Backbone
from keras_cra.errors import ArgumentError
from keras_cra.layers.registry import canonical_attention_name, get_attention

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1

# The architecture of every named variant (filled by `@variant` below):
#   style: "imagenet" (7x7 stem, 4 stages) or "cifar" (3x3 stem, 3 stages)
#   block: "basic" or "bottleneck"; depths: blocks per stage
#   groups / width_per_group: ResNeXt cardinality and width (bottleneck)
MODELS = {}

STYLES = {
    # default input size, minimum input size, stage filters, level of the first stage
    "imagenet": dict(default_size=224, min_size=32, filters=(64, 128, 256, 512), first_level=2),
    "cifar": dict(default_size=32, min_size=8, filters=(16, 32, 64), first_level=0),
}
BLOCKS = ("basic", "bottleneck")

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


def _block(x, block, groups, width_per_group, filters, stride, name, attention,
           attention_kwargs):
    """One residual block; layer names follow keras.applications.resnet."""
    channel_axis = -1 if keras.config.image_data_format() == "channels_last" else 1
    in_channels = x.shape[channel_axis]
    if block == "bottleneck":
        width = int(filters * (width_per_group / 64.0)) * groups
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


def stage_output_names(depths):
    """Names of the layers giving each stage's output, e.g. `conv2_block3_out`."""
    return [f"conv{2 + i}_block{depth}_out" for i, depth in enumerate(depths)]


def pyramid_layers(depths, style):
    """`{"P{n}": stage output layer}`: level n is stride 2**n (the stages of an
    ImageNet-style model are P2..P5; a CIFAR-style model's, at strides 1, 2, 4, P0..P2)."""
    first = STYLES[style]["first_level"]
    return {f"P{first + i}": name for i, name in enumerate(stage_output_names(depths))}


def _check_architecture(depths, block, groups, width_per_group, style, filters):
    if style not in STYLES:
        raise ArgumentError(f"`style` must be one of {sorted(STYLES)}. Received: style={style!r}")
    if block not in BLOCKS:
        raise ArgumentError(f"`block` must be one of {BLOCKS}. Received: block={block!r}")
    if (not isinstance(depths, (list, tuple)) or not depths
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths)):
        raise ArgumentError("`depths` must be a non-empty sequence of positive integers (blocks "
                            f"per stage). Received: depths={depths!r}")
    filters = tuple(STYLES[style]["filters"] if filters is None else filters)
    if len(filters) != len(depths) or any(
            isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters):
        raise ArgumentError(
            "`filters` must give one positive width per stage of `depths` (default: the "
            f"style's {STYLES[style]['filters']}). Received: filters={filters!r}, "
            f"depths={tuple(depths)!r}")
    for arg, value in (("groups", groups), ("width_per_group", width_per_group)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"`{arg}` must be a positive integer. Received: {arg}={value!r}")
    if block == "basic" and (groups, width_per_group) != (1, 64):
        raise ArgumentError("Grouped (ResNeXt) blocks need `block='bottleneck'`. "
                            f"Received: block='basic', groups={groups}, "
                            f"width_per_group={width_per_group}")
    return tuple(depths), filters


def ResNet(
    depths,
    block="basic",
    groups=1,
    width_per_group=64,
    style="imagenet",
    filters=None,
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
    model_name=None,
):
    """Instantiates a CRA ResNet / ResNeXt of any depth and width.

    The architecture is given as arguments (as keras-hub's `ResNetBackbone`
    takes it); the named variants (`CRAResNet50`, ...) are this function with
    their rows of `MODELS`. Everything else follows `keras.applications`.

    Args:
        depths: blocks per stage, e.g. `(3, 4, 6, 3)` for ResNet-50.
        block: `"basic"` (two 3x3 convolutions) or `"bottleneck"` (1x1, 3x3,
            1x1 with 4x expansion).
        groups: groups of the bottleneck's 3x3 convolution (ResNeXt
            cardinality); `1` for ResNet.
        width_per_group: channels per group at the first stage (ResNeXt's
            `d`); `64` for ResNet.
        style: `"imagenet"` (7x7/2 stem and 3x3/2 max pool, stage widths 64,
            128, 256, 512, inputs >= 32) or `"cifar"` (3x3 stem, widths 16,
            32, 64, inputs >= 8).
        filters: optional stage widths, one per stage (default: the style's).
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: as in `keras.applications`
            (registered weight names need `model_name`).
        attention: `"cra"` (default), `"se"`, `"eca"`, `None`, or a layer
            used as a template for every block.
        attention_kwargs: optional dict of arguments of the attention layer.
        model_name: the zoo name whose registered weights `weights` may name
            (set by the named variants).

    Returns:
        A `keras.Model` (`include_top=True`) or a `keras_cra.Backbone`.

    Example:

    >>> tiny = keras_cra.applications.ResNet(
    ...     depths=(1, 1), block="bottleneck", groups=4, width_per_group=4,
    ...     style="cifar", filters=(8, 16), classes=3, input_shape=(16, 16, 3))

    Reference:
        - [Shen & Wen, Convolutional Neural Network optimization via Channel
          Reassessment Attention module, 2020](https://arxiv.org/abs/2010.05605)
        - [He et al., Deep Residual Learning for Image Recognition, CVPR 2016](
          https://arxiv.org/abs/1512.03385)
        - [Xie et al., Aggregated Residual Transformations for Deep Neural
          Networks, CVPR 2017](https://arxiv.org/abs/1611.05431)
    """
    depths, filters = _check_architecture(depths, block, groups, width_per_group, style, filters)
    architecture = dict(depths=depths, block=block, groups=groups,
                        width_per_group=width_per_group, style=style, filters=filters)
    weights_key = model_name or "this ResNet"
    style_spec = STYLES[style]
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
    classes, input_shape = weights_lib.defaults_for(weights, weights_key, classes, input_shape,
                                                    input_tensor)
    weights_lib.validate_weights_argument(
        weights, weights_key, include_top, classes, classifier_activation, attention_name
    )
    if pooling not in (None, "avg", "max"):
        raise ArgumentError(
            "`pooling` must be one of None, 'avg', 'max'. "
            f"Received: pooling={pooling!r}"
        )

    input_shape = _utils.input_shape_of(
        input_shape,
        default_size=style_spec["default_size"],
        min_size=style_spec["min_size"],
        data_format=keras.config.image_data_format(),
        require_flatten=include_top,
        # ImageNet weights fix the input (224x224x3 with a top); weights registered with an
        # input shape (small, fully convolutional nets) take any size.
        pretrained=weights_lib.is_pretrained_name(weights) and (
            weights_lib.WEIGHTS.get((weights_key, weights)) is None
            or weights_lib.WEIGHTS[(weights_key, weights)].input_shape is None),
    )
    img_input = _utils.model_input(input_tensor, input_shape)

    if style == "imagenet":
        x = _conv(img_input, 64, 7, 2, "conv1")
        x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    else:
        x = _conv(img_input, 16, 3, 1, "conv1")
        x = layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))

    for i, (depth, stage_filters) in enumerate(zip(depths, filters)):
        for j in range(depth):
            stride = 2 if (i > 0 and j == 0) else 1
            x = _block(
                x, block, groups, width_per_group, stage_filters, stride,
                f"conv{i + 2}_block{j + 1}", attention, attention_kwargs,
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
        model = Backbone(inputs, x, name=name, pyramid_layers=pyramid_layers(depths, style))
    if weights is not None:
        weights_lib.load_weights(
            model, weights, weights_key,
            build_reference=lambda attention, classes: ResNet(
                **architecture, include_top=True, attention=attention, classes=classes,
                classifier_activation=None, model_name=model_name),
        )
    return model


def default_name(model_name, attention_name):
    base = "resnet" if model_name is None else model_name[len("CRA"):].lower()
    return base if attention_name is None else f"{attention_name}_{base}"


def feature_extractor(model):
    """Returns a model mapping the input to the stage outputs, by pyramid level.

    `{"P2": stride 4, "P3": 8, "P4": 16, "P5": 32}` for ImageNet-style models,
    `{"P0": stride 1, "P1": 2, "P2": 4}` for CIFAR-style ones: the levels of
    `Backbone.pyramid_outputs`, for a model with or without its top. Use it
    with detection or segmentation heads.

    Args:
        model: a model built by a `keras_cra.applications` ResNet builder
            (any `include_top`), or any keras_cra `Backbone`.
    """
    if isinstance(model, Backbone):
        levels = model.pyramid_layers
    else:
        names = [l.name for l in model.layers]
        depths = []
        while any(n.startswith(f"conv{len(depths) + 2}_block") for n in names):
            stage = len(depths) + 2
            depths.append(max(int(n.split("_")[1][5:]) for n in names
                              if n.startswith(f"conv{stage}_block")))
        if not depths:
            raise ArgumentError(
                "`model` has no `convN_blockM_out` layers; build it with a "
                f"keras_cra.applications builder. Received: model={model.name!r}"
            )
        style = "imagenet" if any(n == "pool1_pool" for n in names) else "cifar"
        levels = pyramid_layers(depths, style)
    outputs = {level: model.get_layer(layer).output for level, layer in levels.items()}
    return keras.Model(model.inputs, outputs, name=model.name + "_features")


_DOC = """Instantiates the {model_name} architecture with Channel Reassessment Attention.

    {summary} Architecture: {description}; `ResNet(**MODELS["{model_name}"])`.

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
        A Keras `Model` instance (a `keras_cra.Backbone` without the top).

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


def _describe(architecture):
    text = (f"{architecture['style']}-style ResNet, {architecture['block']} blocks, depths "
            f"{architecture['depths']}")
    if architecture["groups"] > 1:
        text += f", ResNeXt {architecture['groups']}x{architecture['width_per_group']}d"
    return text


def variant(style, block, depths, groups=1, width_per_group=64):
    """Registers the decorated function as a named variant of `ResNet`.

    The function states the `keras.applications` signature and a one-line
    summary; calling it builds `ResNet` with this architecture (recorded in
    `MODELS` under the function's name) and registers it in the zoo.
    """
    architecture = dict(style=style, block=block, depths=tuple(depths), groups=groups,
                        width_per_group=width_per_group)

    def register(fn):
        signature = inspect.signature(fn)
        model_name = fn.__name__

        @functools.wraps(fn)
        def builder(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            return ResNet(**architecture, **arguments.arguments, model_name=model_name)

        size = STYLES[style]["default_size"]
        builder.__doc__ = _DOC.format(
            model_name=model_name,
            summary=inspect.getdoc(fn) or "",
            description=_describe(architecture),
            default_shape=f"({size}, {size}, 3)",
            min_size=STYLES[style]["min_size"],
            default_name=default_name(model_name, "cra"),
            example_shape="(96, 96, 3)" if style == "imagenet" else "(32, 32, 3)",
            resnext_ref=(
                "\n        - [Xie et al., Aggregated Residual Transformations for Deep "
                "Neural Networks, CVPR 2017](https://arxiv.org/abs/1611.05431)"
                if groups > 1 else ""
            ),
        )
        MODELS[model_name] = architecture
        zoo.register(zoo.ZooEntry(
            name=model_name, builder=builder, style=style,
            default_size=STYLES[style]["default_size"], min_size=STYLES[style]["min_size"]))
        return builder

    return register


# The named variants: the keras.applications signature, each one explicit.
@variant("imagenet", "basic", (2, 2, 2, 2))
def CRAResNet18(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-18."""


@variant("imagenet", "basic", (3, 4, 6, 3))
def CRAResNet34(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-34."""


@variant("imagenet", "bottleneck", (3, 4, 6, 3))
def CRAResNet50(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-50: the paper's main ImageNet model (26.31M parameters with CRA)."""


@variant("imagenet", "bottleneck", (3, 4, 23, 3))
def CRAResNet101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None,
                 attention="cra", attention_kwargs=None):
    """ResNet-101 (46.17M parameters with CRA)."""


@variant("imagenet", "bottleneck", (3, 8, 36, 3))
def CRAResNet152(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None,
                 attention="cra", attention_kwargs=None):
    """ResNet-152."""


@variant("imagenet", "bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4)
def CRAResNeXt50(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None,
                 attention="cra", attention_kwargs=None):
    """ResNeXt-50 32x4d."""


@variant("imagenet", "bottleneck", (3, 4, 23, 3), groups=32, width_per_group=4)
def CRAResNeXt101(include_top=True, weights=None, input_tensor=None, input_shape=None,
                  pooling=None, classes=1000, classifier_activation="softmax", name=None,
                  attention="cra", attention_kwargs=None):
    """ResNeXt-101 32x4d (45.80M parameters with CRA)."""


@variant("cifar", "basic", (3, 3, 3))
def CRAResNet20(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-20 for 32x32 images (He et al.'s CIFAR-10 network)."""


@variant("cifar", "basic", (5, 5, 5))
def CRAResNet32(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-32 for 32x32 images."""


@variant("cifar", "basic", (9, 9, 9))
def CRAResNet56(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None,
                attention="cra", attention_kwargs=None):
    """ResNet-56 for 32x32 images."""


@variant("cifar", "basic", (18, 18, 18))
def CRAResNet110(include_top=True, weights=None, input_tensor=None, input_shape=None,
                 pooling=None, classes=1000, classifier_activation="softmax", name=None,
                 attention="cra", attention_kwargs=None):
    """ResNet-110 for 32x32 images."""


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
