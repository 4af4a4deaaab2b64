"""RetinaNet (keras-hub) on a keras_cra backbone."""

import os

from keras_cra.errors import ArgumentError


def build_detector(backbone="CRAResNet18", num_classes=10, image_size=96, attention="cra",
                   backbone_weights=None, head_convs=2, min_level=3, max_level=5,
                   confidence_threshold=0.05):
    """A `keras_hub.models.RetinaNetObjectDetector` on a zoo backbone.

    Args:
        backbone: a zoo model name with an ImageNet-style stem (pyramid
            levels P2-P5), e.g. `"CRAResNet18"`, `"CRAResNet50"`,
            `"CRAMobileNetV2"`.
        num_classes: number of object classes.
        image_size: side of the square input (a multiple of 32).
        attention: the backbone's attention (`"cra"`, `"se"`, `"eca"` or
            `None`).
        backbone_weights: `None`, `"imagenet"` (the zoo's registered
            weights), or a `.keras` classifier of the same backbone whose
            weights are copied layer by layer (the head is left out).
        head_convs: 3x3 convolutions (256 filters) in each RetinaNet head
            before its output layer (RetinaNet's paper uses 4).
        min_level, max_level: the feature pyramid's levels.
        confidence_threshold: the lowest score the decoder keeps (0.05,
            COCO's convention for measuring mAP).

    Returns:
        The detector: images in (the zoo's "torch" preprocessing), `xyxy`
        pixel boxes out.
    """
    import keras_hub

    from keras_cra.applications import zoo

    if backbone not in zoo.ZOO:
        raise ArgumentError(f"Unknown backbone. Valid names: {zoo.names()}. "
                         f"Received: backbone={backbone!r}")
    if zoo.get(backbone).style != "imagenet":
        raise ArgumentError(
            f"{backbone} is a CIFAR-style model (pyramid levels P0-P2, no stride-8 to 32 "
            f"maps); RetinaNet needs P3-P5: use an ImageNet-style backbone such as "
            f"CRAResNet18. Received: backbone={backbone!r}")
    if not isinstance(image_size, int) or image_size < 64 or image_size % 32:
        raise ArgumentError("`image_size` must be a multiple of 32, >= 64. "
                         f"Received: image_size={image_size!r}")
    from_file = backbone_weights is not None and str(backbone_weights).endswith(".keras")
    encoder = zoo.get_model(
        backbone, include_top=False, input_shape=(image_size, image_size, 3),
        attention=attention, weights=None if from_file else backbone_weights)
    if from_file:
        copy_backbone_weights(backbone_weights, encoder)
    pyramid = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=min_level, max_level=max_level, use_p5=False,
        image_shape=(image_size, image_size, 3))
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format="xyxy", from_logits=True, confidence_threshold=confidence_threshold)
    return keras_hub.models.RetinaNetObjectDetector(
        backbone=pyramid, num_classes=num_classes, bounding_box_format="xyxy",
        pre_logits_num_conv_layers=head_convs, prediction_decoder=decoder)


def copy_backbone_weights(path, encoder):
    """Copies the weights of every weighted layer of `encoder` from the layer of the same
    name in the `.keras` model at `path` (a classifier of the same backbone; its head is
    left out). Every such layer must be there with the same shapes. Returns the number of
    layers copied."""
    from keras_cra.files import load_keras_model

    if not os.path.exists(path):
        raise ArgumentError(f"`backbone_weights` file not found. Received: backbone_weights={path}")
    source = load_keras_model(path, "backbone_weights")
    by_name = {layer.name: layer for layer in source.layers}
    missing = [layer.name for layer in encoder.layers
               if layer.weights and layer.name not in by_name]
    if missing:
        raise ArgumentError(
            f"{len(missing)} weighted layers of the backbone are not in {path} (e.g. "
            f"{', '.join(missing[:3])}); is it the same backbone and attention? "
            f"Received: backbone_weights={path}")
    copied = 0
    for layer in encoder.layers:
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        if [w.shape for w in layer.weights] != [w.shape for w in other.weights]:
            raise ArgumentError(
                f"Layer {layer.name!r} has other shapes in {path}; is it the same backbone "
                f"and attention? Received: backbone_weights={path}")
        layer.set_weights(other.get_weights())
        copied += 1
    if copied == 0:
        raise ArgumentError(f"No layer of the backbone was found in {path}. "
                         f"Received: backbone_weights={path}")
    return copied
