"""Keras' own layer harness (`keras.src.testing.TestCase`, private API, tests only) on every
registered attention: both `data_format`s, under both global image data formats."""

import keras
import pytest
from keras.src import testing

from keras_cra.layers import ATTENTIONS

# Non-default arguments of each attention, for the class serialization check.
NON_DEFAULT = {
    "cra": {"pool_size": 5, "kernel_regularizer": "l2", "bias_initializer": "ones"},
    "se": {"reduction": 4, "kernel_initializer": "he_uniform"},
    "eca": {"kernel_size": 5, "gamma": 3, "b": 2},
}


def _harness():
    case = testing.TestCase(methodName="run_layer_test")
    case.setUp()
    return case


@pytest.fixture(params=["channels_last", "channels_first"], ids=["global_last", "global_first"])
def global_format(request):
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format("channels_last")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_run_layer_test(name, data_format, global_format):
    shape = (2, 9, 10, 8) if data_format == "channels_last" else (2, 8, 9, 10)
    _harness().run_layer_test(
        ATTENTIONS[name], {"data_format": data_format, **NON_DEFAULT[name]},
        input_shape=shape, expected_output_shape=shape, expected_num_non_trainable_weights=0,
        supports_masking=False)


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_class_serialization_with_non_default_arguments(name):
    layer = ATTENTIONS[name](data_format="channels_first", **NON_DEFAULT[name])
    _harness().run_class_serialization_test(layer)
    config = layer.get_config()
    for key, value in NON_DEFAULT[name].items():
        if isinstance(value, (int, float)):
            assert config[key] == value, key
    snapshot = dict(config)
    ATTENTIONS[name].from_config(config)
    assert config == snapshot  # from_config leaves its argument as it was
