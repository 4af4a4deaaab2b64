import numpy as np
import keras
import pytest

import keras_cra.applications as A
from keras_cra.applications import zoo
from keras_cra.layers import ChannelReassessmentAttention, SqueezeExcitation


def test_is_keras_mobilenetv2_with_cra_at_every_residual_add():
    model = A.CRAMobileNetV2(input_shape=(96, 96, 3), classes=7)
    plain = A.CRAMobileNetV2(input_shape=(96, 96, 3), classes=7, attention=None)
    keras_model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3),
                                                 classes=7)
    cra = [l for l in model.layers if isinstance(l, ChannelReassessmentAttention)]
    assert len(cra) == 10 and model.get_layer("block_2_cra") in cra
    assert plain.count_params() == keras_model.count_params()
    assert model.count_params() - plain.count_params() == sum(
        l.input.shape[-1] * 50 for l in cra)
    assert model.name == "cra_mobilenetv2_1" and plain.name == "mobilenetv2_1"
    assert zoo.get("CRAMobileNetV2").builder is A.CRAMobileNetV2


def test_torch_preprocessed_inputs_reach_mobilenetv2_as_keras_expects():
    """The first layer maps keras_cra's "torch" preprocessing to MobileNetV2's [-1, 1]."""
    plain = A.CRAMobileNetV2(input_shape=(64, 64, 3), classes=5, attention=None)
    reference = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3),
                                               classes=5)
    reference.set_weights(plain.get_weights())
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")
    torch_mode = A.preprocess_input(pixels.copy())
    tf_mode = keras.applications.mobilenet_v2.preprocess_input(pixels.copy())
    np.testing.assert_allclose(plain(torch_mode), reference(tf_mode), rtol=1e-4, atol=1e-5)


def test_arguments():
    model = A.CRAMobileNetV2(include_top=False, pooling="avg", alpha=0.5, attention="se",
                             input_shape=(64, 64, 3))
    assert model.output.shape == (None, 1280)
    assert sum(isinstance(l, SqueezeExcitation) for l in model.layers) == 10
    with pytest.raises(ValueError, match="Received: weights='nope'"):
        A.CRAMobileNetV2(weights="nope")
    with pytest.raises(ValueError, match="Received: attention_kwargs="):
        A.CRAMobileNetV2(attention=None, attention_kwargs={"pool_size": 3})


@pytest.mark.large
def test_trains_with_the_training_cli(tfds_dir, tmp_path):
    from keras_cra.training import train as train_lib

    metrics = train_lib.train(train_lib.TrainConfig(
        model="CRAMobileNetV2", train_split="train[:32]", eval_split="test[:32]", epochs=1,
        batch_size=32, data_dir=tfds_dir, out=str(tmp_path / "run"), verbose=0))
    assert metrics["model"] == "CRAMobileNetV2" and metrics["eval_examples"] == 32
    restored = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert sum(isinstance(l, ChannelReassessmentAttention) for l in restored.layers) == 10
