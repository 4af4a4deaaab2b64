"""Feature-extractor models that the Keras detection libraries accept as they are."""

import copy

import keras

from keras_cra.errors import ArgumentError


@keras.saving.register_keras_serializable(package="keras_cra")
class Backbone(keras.Model):
    """A functional model with the pyramid attributes detectors read.

    Every `include_top=False` model of `keras_cra.applications` is a
    `Backbone`. Besides its usual output it names the layer giving each
    pyramid level `P{n}` (a feature map at stride `2**n`), and exposes them
    the way both Keras detection libraries expect:

    - `pyramid_outputs`: `{"P2": tensor, ...}` (keras-hub, e.g.
      `keras_hub.models.RetinaNetBackbone(image_encoder=backbone, ...)`);
    - `pyramid_level_inputs`: `{"P2": layer_name, ...}` (keras-cv, e.g.
      `keras_cv.models.RetinaNet(backbone=backbone, ...)` or
      `YOLOV8Detector`).

    Both survive a `.keras` save and load. ImageNet-style models have
    `P2`-`P5` (strides 4 to 32); CIFAR-style models have `P0`-`P2` (strides
    1 to 4), so detectors that read `P3`-`P5` need an ImageNet-style model.

    Args:
        inputs: the model's input tensor(s).
        outputs: the model's output tensor(s).
        name: the model's name.
        pyramid_layers: dict, `{"P{n}": layer name}`; every layer must be in
            the model.
        **kwargs: other `keras.Model` arguments.

    Example:

    >>> backbone = keras_cra.applications.CRAResNet50(include_top=False,
    ...                                               input_shape=(128, 128, 3))
    >>> sorted(backbone.pyramid_level_inputs)
    ['P2', 'P3', 'P4', 'P5']
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        pyramid_layers = kwargs.pop("pyramid_layers", None)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        if not isinstance(pyramid_layers, dict) or not pyramid_layers:
            raise ArgumentError(
                "`pyramid_layers` must be a non-empty dict {'P<level>': layer name}. "
                f"Received: pyramid_layers={pyramid_layers!r}"
            )
        names = {layer.name for layer in self.layers}
        for level, layer_name in pyramid_layers.items():
            if not (isinstance(level, str) and level[:1] == "P" and level[1:].isdigit()):
                raise ArgumentError(
                    "`pyramid_layers` keys must be 'P<level>' (e.g. 'P3'). "
                    f"Received: pyramid_layers={pyramid_layers!r}"
                )
            if layer_name not in names:
                raise ArgumentError(
                    f"`pyramid_layers` names a layer the model does not have: {layer_name!r}. "
                    f"Received: pyramid_layers={pyramid_layers!r}"
                )
        self.pyramid_layers = dict(sorted(pyramid_layers.items(), key=lambda kv: int(kv[0][1:])))

    @property
    def token_embedding(self):
        """`None`: an image backbone has no token embedding (keras-hub's `Backbone` API)."""
        return None

    @property
    def pyramid_level_inputs(self):
        """`{"P{n}": layer name}` (the keras-cv convention)."""
        return dict(self.pyramid_layers)

    @property
    def pyramid_outputs(self):
        """`{"P{n}": symbolic tensor}` (the keras-hub convention)."""
        return {level: self.get_layer(name).output for level, name in self.pyramid_layers.items()}

    def get_config(self):
        config = super().get_config()
        config["pyramid_layers"] = dict(self.pyramid_layers)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras' functional deserialization pops keys: work on a copy, as keras-hub does.
        return super().from_config(copy.deepcopy(config), custom_objects=custom_objects)


def as_backbone(model, pyramid_layers):
    """`model` as a `Backbone` sharing its layers and weights."""
    def single(tensors):
        return tensors[0] if len(tensors) == 1 else tensors

    return Backbone(single(model.inputs), single(model.outputs), name=model.name,
                    pyramid_layers=pyramid_layers)
