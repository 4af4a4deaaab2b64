"""The checks of Keras' own `keras/src/applications/applications_test.py`, applied to every
zoo builder (weights=None, small inputs), and the errors keras.applications raises.

The default lane checks one ImageNet-style and one CIFAR-style builder; the `large` lane
checks all of them (bottleneck and grouped blocks and the inverted residuals included)."""

import keras
import numpy as np
import pytest

from keras_cra.applications import zoo

FAST = ("CRAResNet18", "CRAResNet20")  # the default lane; the others in the large lane
BUILDERS = [pytest.param(n, marks=() if n in FAST else pytest.mark.large) for n in zoo.names()]


def _last_dim(name):
    model = zoo.get(name).builder(weights=None, include_top=False, input_shape=(None, None, 3))
    return model.outputs[0].shape[-1]


@pytest.fixture
def data_format(request):
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format("channels_last")


def _size(name):
    return max(zoo.get(name).min_size, 32)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"], indirect=True)
@pytest.mark.parametrize("name", BUILDERS)
def test_notop_shapes_channels_input_tensor_and_pooling(name, data_format):
    """applications_test: variable input channels, custom input shape, custom input tensor,
    pooling, in both data formats (built symbolically: TF's CPU convolutions are
    channels_last only, so only channels_last runs below)."""
    app = zoo.get(name).builder
    first = data_format == "channels_first"
    last_dim = _last_dim(name) if not first else None
    for channels in (1, 4):
        model = app(weights=None, include_top=False,
                    input_shape=(channels, None, None) if first else (None, None, channels))
        shape = list(model.outputs[0].shape)
        assert shape == ([None, shape[1], None, None] if first else [None, None, None, last_dim])
    last_dim = shape[1] if first else last_dim
    model = app(weights=None, include_top=False,
                input_shape=(3, 123, 123) if first else (123, 123, 3))
    assert list(model.outputs[0].shape)[1 if first else -1] == last_dim
    # A custom input tensor: the layers before it stay part of the model.
    inputs = keras.Input((4, 200, 200) if first else (200, 200, 4), name="custom_input")
    tensor = keras.layers.Conv2D(3, 2, strides=2, name="user_conv")(inputs)
    model = app(weights=None, include_top=False, input_tensor=tensor)
    assert list(model.outputs[0].shape)[1 if first else -1] == last_dim
    assert model.inputs[0] is inputs and model.get_layer("user_conv") is not None
    # The transfer-learning pattern of the Keras guides.
    head = keras.layers.Dense(5, name="head")(keras.layers.GlobalAveragePooling2D()(model.output))
    assert keras.Model(model.input, head).output.shape == (None, 5)
    assert keras.Model(inputs, head).output.shape == (None, 5)
    model = app(weights=None, include_top=False, pooling="max")
    assert list(model.outputs[0].shape) == [None, last_dim]


@pytest.mark.parametrize("name", BUILDERS)
def test_runs_on_any_channel_count_and_top_options(name):
    """What keras.applications' ResNet50 runs, ours runs: 1 and 4 input channels; the top's
    classes and activation; avg pooling."""
    app, size = zoo.get(name).builder, _size(name)
    for channels in (1, 4):
        model = app(weights=None, include_top=False, pooling="avg",
                    input_shape=(size, size, channels))
        out = model.predict(np.zeros((1, size, size, channels), "float32"), verbose=0)
        assert out.shape == (1, model.output.shape[-1]) and np.isfinite(out).all()
    model = app(weights=None, include_top=True, classes=7, classifier_activation="softmax",
                input_shape=(size, size, 3))
    assert model.layers[-1].activation.__name__ == "softmax" and model.output.shape == (None, 7)
    probabilities = model.predict(np.random.default_rng(0).random((2, size, size, 3)), verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    config = keras.saving.serialize_keras_object(model)
    assert len(keras.saving.deserialize_keras_object(config).weights) == len(model.weights)


@pytest.mark.parametrize("name", BUILDERS)
def test_errors_are_keras_applications_errors(name, tmp_path):
    app = zoo.get(name).builder
    for kwargs in ({"weights": "imagenet", "include_top": True, "classes": 10},
                   {"weights": None, "include_top": True, "input_shape": (None, None, 3)},
                   {"weights": "imagenet", "input_shape": (224, 224, 1)}):
        theirs = _raised(keras.applications.ResNet50, **kwargs)
        if theirs is not None:
            ours = _raised(app, **kwargs)
            assert ours is not None and issubclass(ours, theirs), (kwargs, ours, theirs)
    # A weights file that does not exist: a ValueError naming it, before anything is built.
    missing = str(tmp_path / "no_such.weights.h5")
    for builder in (keras.applications.ResNet50, app):
        with pytest.raises(ValueError, match="no_such.weights.h5"):
            builder(weights=missing)


def _raised(fn, **kwargs):
    try:
        fn(**kwargs)
    except Exception as e:  # the class is what is compared
        return type(e)
    return None
