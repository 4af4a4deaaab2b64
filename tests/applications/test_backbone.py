"""Zoo backbones in the Keras detection libraries, used as those libraries document."""


import keras
import numpy as np
import pytest

from keras_cra import add_attention
from keras_cra.applications import CRAMobileNetV2, CRAResNet18, CRAResNet20
from keras_cra.backbone import Backbone

# Boxes in xyxy pixels, -1 padding, the format both libraries document.
X = np.random.default_rng(0).random((4, 64, 64, 3)).astype("float32")
BOXES = np.array([[[4, 4, 30, 30], [-1, -1, -1, -1]]] * 4, "float32")
LABELS = np.array([[1, -1]] * 4)


def test_levels_and_strides():
    for builder, size, levels in ((CRAResNet18, 64, (2, 3, 4, 5)), (CRAResNet20, 32, (0, 1, 2)),
                                  (CRAMobileNetV2, 64, (2, 3, 4, 5))):
        model = builder(include_top=False, input_shape=(size, size, 3))
        assert isinstance(model, Backbone)
        outputs = model.pyramid_outputs
        assert sorted(outputs) == sorted(model.pyramid_level_inputs) == [f"P{n}" for n in levels]
        for level, tensor in outputs.items():
            # Level n is stride 2**n.
            assert tensor.shape[1] == size // 2 ** int(level[1:]), (builder, level)
            assert model.get_layer(model.pyramid_level_inputs[level]).output is tensor
    assert not isinstance(CRAResNet18(input_shape=(64, 64, 3)), Backbone)


def test_save_load_and_add_attention_keep_the_levels(tmp_path):
    model = CRAResNet18(include_top=False, input_shape=(64, 64, 3))
    path = tmp_path / "b.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Backbone)
    assert loaded.pyramid_level_inputs == model.pyramid_level_inputs
    np.testing.assert_allclose(loaded(X), model(X), rtol=1e-5, atol=1e-5)
    added = add_attention(CRAResNet18(include_top=False, attention=None, input_shape=(64, 64, 3)))
    assert isinstance(added, Backbone) and added.count_params() == model.count_params()
    assert added.output.shape == model.output.shape  # one tensor, not a list
    assert added.pyramid_level_inputs == model.pyramid_level_inputs


def test_bad_pyramid_layers():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(4, 3, name="c")(inputs)
    with pytest.raises(ValueError, match="names a layer the model does not have: 'd'"):
        Backbone(inputs, outputs, pyramid_layers={"P3": "d"})
    with pytest.raises(ValueError, match="keys must be 'P<level>'"):
        Backbone(inputs, outputs, pyramid_layers={"C3": "c"})
    with pytest.raises(ValueError, match="non-empty dict"):
        Backbone(inputs, outputs)


@pytest.mark.large
def test_keras_hub_retinanet(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    image_encoder = CRAResNet18(include_top=False, input_shape=(64, 64, 3))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=image_encoder, min_level=3, max_level=5, use_p5=False,
        image_shape=(64, 64, 3))
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=10, bounding_box_format="xyxy",
        pre_logits_num_conv_layers=1)
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [w.numpy().copy() for w in image_encoder.weights[:2]]
    history = detector.fit(X, {"boxes": BOXES, "labels": LABELS}, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The CRA backbone trained inside the detector.
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, image_encoder.weights[:2]))
    predictions = detector.predict(X[:2], verbose=0)
    assert predictions["boxes"].shape == (2, 100, 4) and predictions["labels"].shape == (2, 100)
    path = tmp_path / "det.keras"
    detector.save(path)
    loaded = keras.saving.load_model(path)
    encoder = loaded.backbone.image_encoder
    assert isinstance(encoder, Backbone) and sorted(encoder.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    assert any("cra" in layer.name for layer in encoder.layers)


@pytest.mark.large
@pytest.mark.parametrize("kind", ["retinanet", "yolov8"])
def test_keras_cv_detectors(kind):
    keras_cv = pytest.importorskip("keras_cv")
    backbone = CRAResNet18(include_top=False, input_shape=(64, 64, 3))
    if kind == "retinanet":
        detector = keras_cv.models.RetinaNet(backbone=backbone, num_classes=10,
                                             bounding_box_format="xyxy")
        detector.compile(optimizer=keras.optimizers.SGD(0.01), classification_loss="focal",
                         box_loss="smoothl1")
    else:
        detector = keras_cv.models.YOLOV8Detector(backbone=backbone, num_classes=10,
                                                  bounding_box_format="xyxy", fpn_depth=1)
        detector.compile(optimizer=keras.optimizers.SGD(0.01),
                         classification_loss="binary_crossentropy", box_loss="ciou")
    y = {"boxes": BOXES, "classes": LABELS.astype("float32")}
    history = detector.fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predictions = detector.predict(X[:2], verbose=0)
    assert predictions["boxes"].shape[:2] == (2, 100)
    # The detector's feature extractor reads the CRA stage outputs.
    names = {layer.name for layer in detector.layers for layer in getattr(layer, "layers", [layer])}
    assert any(name.endswith("_cra") for name in names), sorted(names)[:20]
