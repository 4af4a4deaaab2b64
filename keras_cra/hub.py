"""keras-hub presets of keras_cra models.

keras-hub loads a preset only into a subclass of its own `Backbone`, and
only once the preset's classes are registered with Keras. This module holds
that subclass, `HubBackbone` (registered as `keras_cra>HubBackbone`), and
the functions that turn keras_cra models into keras-hub models:

>>> import keras_cra.hub
>>> backbone = keras_cra.hub.hub_backbone(
...     keras_cra.applications.CRAResNet18(include_top=False, input_shape=(64, 64, 3)))
>>> backbone.save_to_preset("cra_resnet18_preset")
>>> keras_hub.models.Backbone.from_preset("cra_resnet18_preset")  # in any process

Loading a preset needs the classes registered: `import keras_cra.hub`, or
`import keras_cra` after `import keras_hub`. Every preset written here
carries a `README.md` saying so. keras-hub is an optional dependency (the
`[detection]` extra).
"""

import copy
import os

import keras

try:
    import keras_hub
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("keras_cra.hub needs keras-hub: pip install 'keras_cra[detection]'") from e

from keras_cra.backbone import Backbone
from keras_cra.errors import UsageError

LOADING_NOTE = (
    "This keras-hub preset holds keras_cra models. Load it after `import keras_cra.hub` "
    "(or `import keras_hub` then `import keras_cra`), which registers their classes:\n\n"
    "    import keras_hub, keras_cra.hub\n"
    "    model = keras_hub.models.{task}.from_preset(\"{folder}\")\n"
)


@keras.saving.register_keras_serializable(package="keras_cra")
class HubBackbone(keras_hub.models.Backbone, Backbone):
    """A keras_cra `Backbone` that is also a `keras_hub.models.Backbone`.

    It saves as a keras-hub preset (`save_to_preset`) and loads back with
    `keras_hub.models.Backbone.from_preset(folder)`; keras-hub tasks such as
    `keras_hub.models.ImageClassifier` and `RetinaNetBackbone` take it. Its
    config is the functional graph (as for `Backbone`), plus its dtype policy.

    Args:
        inputs: the model's input tensor.
        outputs: the model's output tensor (the last feature map).
        name: the model's name.
        pyramid_layers: dict, `{"P{n}": layer name}` (see `Backbone`).
        dtype: optional dtype policy (keras-hub's `Backbone` argument).
        **kwargs: other `keras.Model` arguments.

    Example:

    >>> backbone = keras_cra.hub.hub_backbone(
    ...     keras_cra.applications.CRAResNet20(include_top=False))
    >>> isinstance(backbone, keras_hub.models.Backbone)
    True
    """

    def get_config(self):
        config = Backbone.get_config(self)
        config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # A functional config: rebuilt as a graph (keras-hub's `cls(**config)` cannot),
        # on a copy, since the functional rebuild pops keys.
        return keras.Model.from_config.__func__(cls, copy.deepcopy(config),
                                                custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="keras_cra")
class CRAImageConverter(keras_hub.layers.ImageConverter):
    """keras-hub's `ImageConverter` for `HubBackbone` models (see `torch_image_converter`)."""

    backbone_cls = HubBackbone


@keras.saving.register_keras_serializable(package="keras_cra")
class CRAImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """keras-hub's `ImageClassifierPreprocessor` for `HubBackbone` models."""

    backbone_cls = HubBackbone
    image_converter_cls = CRAImageConverter


@keras.saving.register_keras_serializable(package="keras_cra")
class CRAImageClassifier(keras_hub.models.ImageClassifier):
    """keras-hub's `ImageClassifier` on a `HubBackbone`: what
    `keras_hub.models.ImageClassifier.from_preset` returns for a keras_cra preset."""

    backbone_cls = HubBackbone
    preprocessor_cls = CRAImageClassifierPreprocessor


def hub_backbone(backbone):
    """A `HubBackbone` copy of a keras_cra `Backbone` (its own layers, the same weights).

    Args:
        backbone: a `keras_cra.applications.Backbone`: any `include_top=False`
            zoo model, or an `add_attention` result of one.

    Returns:
        A new `HubBackbone`; `backbone` is left as it is.
    """
    from keras_cra.attach import copy_model

    if not isinstance(backbone, Backbone):
        raise UsageError(
            "`backbone` must be a keras_cra Backbone (an include_top=False model of "
            f"keras_cra.applications). Received: backbone={getattr(backbone, 'name', backbone)!r} "
            f"({type(backbone).__name__})")
    if len(backbone.inputs) != 1 or len(backbone.outputs) != 1:
        raise UsageError("`backbone` must have one input and one output. "
                         f"Received: backbone={backbone.name!r}")
    new = copy_model(backbone)
    return HubBackbone(new.inputs[0], new.outputs[0], name=backbone.name,
                       pyramid_layers=new.pyramid_layers)


def torch_image_converter(image_size):
    """keras-hub's `ImageConverter` doing keras_cra's "torch" preprocessing: resize to
    `image_size`, then `x / 255`, minus the ImageNet mean, divided by its std."""
    from keras_cra.applications.imagenet import IMAGENET_MEAN, IMAGENET_STD

    return CRAImageConverter(
        image_size=tuple(image_size),
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        interpolation="bilinear",
    )


def image_classifier(model_name, weights=None, input_shape=None, classes=None,
                     classifier_activation="softmax", preprocessor=True, **kwargs):
    """A keras-hub `ImageClassifier` (a `CRAImageClassifier`) of a keras_cra zoo model.

    The backbone is the zoo model with `include_top=False` (a `HubBackbone`),
    the head keras-hub's (average pooling, a Dense named `predictions`), both
    holding the weights of `builder(include_top=True, weights=weights, ...)`.

    Args:
        model_name: a zoo name, e.g. `"CRAResNet20"`.
        weights: the zoo builder's `weights` (`None`, a registered name such as
            `"fashion_mnist"`, or a file).
        input_shape, classes, classifier_activation: as the zoo builder's
            (`classes` default: the weights' classes, else 1000).
        preprocessor: `True`: an `ImageClassifierPreprocessor` taking RGB
            images of any size with values 0-255 (resize, then the model's
            "torch" preprocessing); `False`: none (inputs preprocessed).
        **kwargs: other zoo builder arguments (`attention`, ...).

    Returns:
        A new `CRAImageClassifier` (a `keras_hub.models.ImageClassifier`).
    """
    from keras_cra.applications import zoo
    from keras_cra.applications.weights import copy_weights_by_name

    if model_name not in zoo.names():
        raise UsageError(f"`model_name` must be one of {zoo.names()}. "
                         f"Received: model_name={model_name!r}")
    builder = zoo.get(model_name).builder
    classifier_kwargs = dict(kwargs, input_shape=input_shape, weights=weights,
                             classifier_activation=classifier_activation)
    if classes is not None:
        classifier_kwargs["classes"] = classes
    classifier = builder(include_top=True, **classifier_kwargs)
    head = classifier.get_layer("predictions")
    features = builder(include_top=False, weights=None, input_shape=classifier.input_shape[1:],
                       **kwargs)
    copy_weights_by_name(classifier, features)
    backbone = HubBackbone(features.inputs[0], features.outputs[0], name=features.name,
                           pyramid_layers=features.pyramid_layers)
    activation = keras.activations.serialize(head.activation)
    task = CRAImageClassifier(
        backbone=backbone, num_classes=head.units,
        activation=None if activation == "linear" else activation,
        preprocessor=(CRAImageClassifierPreprocessor(
            image_converter=torch_image_converter(classifier.input_shape[1:3]))
            if preprocessor else None),
        name=classifier.name,
    )
    task.output_dense.set_weights(head.get_weights())
    return task


def save_preset(model, folder, class_names=None):
    """Saves a `HubBackbone` or a keras-hub task of one as a keras-hub preset in `folder`
    (a new or empty folder), with a `README.md` on how to load it and, for a classifier,
    `labels.txt` when `class_names` are given. Returns `folder`."""
    from keras_cra.files import check_output_dir

    folder = check_output_dir(folder, "folder")
    if os.path.isdir(folder) and os.listdir(folder):
        raise UsageError(f"The preset folder must be new or empty; nothing was written. "
                         f"Received: folder={folder}")
    is_task = isinstance(model, keras_hub.models.Task)
    backbone = model.backbone if is_task else model
    if not isinstance(backbone, HubBackbone):
        raise UsageError("`model` must be a HubBackbone or a keras-hub task of one (see "
                         f"hub_backbone and image_classifier). Received: model={model!r}")
    model.save_to_preset(folder)
    task = type(model).__name__ if is_task else "Backbone"
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(LOADING_NOTE.format(task=task, folder=folder))
    if class_names:
        with open(os.path.join(folder, "labels.txt"), "w") as f:
            f.write("\n".join(class_names) + "\n")
    return folder


def fashion_mnist_preset(folder):
    """Writes the packaged Fashion-MNIST CRAResNet20 weights as a keras-hub
    `ImageClassifier` preset (28x28 RGB images, values 0-255, in; probabilities out)."""
    from keras_cra.applications.weights import FASHION_MNIST_CLASSES

    task = image_classifier("CRAResNet20", weights="fashion_mnist")
    return save_preset(task, folder, class_names=list(FASHION_MNIST_CLASSES))


def main(argv=None):
    import argparse

    from keras_cra.cli import run

    p = argparse.ArgumentParser(
        prog="python -m keras_cra.hub",
        description="Write the packaged Fashion-MNIST CRAResNet20 as a keras-hub "
                    "ImageClassifier preset.")
    p.add_argument("folder", help="a new or empty folder")
    a = p.parse_args(argv)
    return run(lambda: print(fashion_mnist_preset(a.folder)))


if __name__ == "__main__":
    import sys

    sys.exit(main())
