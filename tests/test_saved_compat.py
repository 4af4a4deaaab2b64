"""Files written by an earlier keras_cra still load and compute the same numbers.

tests/fixtures/saved_0_2_0/ was written by keras_cra 0.2.0's code (tests/fixtures/
make_saved_models.py, before the ResNet builder, the Backbone module and the attention
near-identity start were restructured): a CRAResNet20, a Backbone holding CRA, SE and ECA.
"""

import os

import keras
import numpy as np
import pytest

import keras_cra
from keras_cra.applications import Backbone

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "saved_0_2_0")


@pytest.fixture(scope="module")
def outputs():
    return np.load(os.path.join(FIXTURES, "outputs.npz"))


@pytest.mark.parametrize("name", ["cra_resnet20", "tiny_backbone"])
def test_earlier_files_load_and_compute_the_same(name, outputs):
    model = keras.saving.load_model(os.path.join(FIXTURES, f"{name}.keras"))
    np.testing.assert_allclose(model.predict(outputs[f"{name}_x"], verbose=0),
                               outputs[f"{name}_y"], rtol=1e-5, atol=1e-6)
    kinds = {type(l).__name__ for l in model.layers}
    if name == "tiny_backbone":
        assert isinstance(model, Backbone)
        assert model.pyramid_layers == {"P0": "b1_add", "P1": "b2_eca"}
        assert {"ChannelReassessmentAttention", "SqueezeExcitation",
                "EfficientChannelAttention"} <= kinds
    else:
        assert model.count_params() == keras_cra.applications.CRAResNet20(
            weights=None, classes=10, input_shape=(32, 32, 3)).count_params()
        assert "ChannelReassessmentAttention" in kinds


def test_fixtures_are_the_earlier_version():
    assert open(os.path.join(FIXTURES, "VERSION")).read().strip() == "0.2.0"
