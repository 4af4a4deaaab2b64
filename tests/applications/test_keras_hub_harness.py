"""keras-hub's own backbone checks (`keras_hub/src/tests/test_case.py`'s
`run_vision_backbone_test`) on every kind of `Backbone` we make: the zoo's, CRAMobileNetV2's
and `add_attention`'s; and their pyramid outputs feeding keras-hub's RetinaNet."""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
from keras_hub.src.tests.test_case import TestCase  # noqa: E402

import keras_cra  # noqa: E402
from keras_cra.backbone import Backbone  # noqa: E402

SIZE = 64


def _plain_resnet18_with_cra(**kwargs):
    return keras_cra.add_attention(keras_cra.applications.CRAResNet18(
        include_top=False, attention=None, **kwargs), "cra")


BACKBONES = {
    "zoo": lambda **kw: keras_cra.applications.CRAResNet18(include_top=False, **kw),
    "zoo_bottleneck": lambda **kw: keras_cra.applications.CRAResNeXt50(include_top=False, **kw),
    "mobilenet_v2": lambda **kw: keras_cra.applications.CRAMobileNetV2(
        include_top=False, alpha=0.35, **kw),
    "add_attention": _plain_resnet18_with_cra,
}


def _as_backbone_class(build, name):
    """What keras-hub's harness expects of a backbone class, `cls(**init_kwargs, dtype=...)`
    and `cls.from_config`, over a builder (dtype policies are applied as a global policy
    while it builds, as a keras.applications builder takes them)."""

    class Adapter:
        def __new__(cls, dtype=None, **kwargs):
            previous = keras.config.dtype_policy()
            if isinstance(dtype, (str, keras.DTypePolicy)) and not isinstance(
                    dtype, keras.dtype_policies.DTypePolicyMap):
                keras.config.set_dtype_policy(dtype)
            try:
                return build(**kwargs)
            finally:
                keras.config.set_dtype_policy(previous)

        from_config = staticmethod(Backbone.from_config)

    # keras-hub checks that the model's name holds its class name in snake case.
    Adapter.__name__ = "".join(p.capitalize() for p in name.split("_") if not p[0].isdigit())
    return Adapter


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.large)
                                  if k in ("zoo_bottleneck", "mobilenet_v2", "add_attention")
                                  else k
                                  for k in sorted(BACKBONES)])
def test_keras_hub_vision_backbone_harness(kind):
    build = BACKBONES[kind]
    model = build(input_shape=(SIZE, SIZE, 3))
    harness = TestCase(methodName="run_vision_backbone_test")
    harness.setUp()
    levels = sorted(model.pyramid_outputs)
    config = model.get_config()
    snapshot = repr(config)
    Backbone.from_config(config)
    assert repr(config) == snapshot  # from_config leaves its argument unchanged
    harness.run_vision_backbone_test(
        cls=_as_backbone_class(build, model.name),
        init_kwargs={"input_shape": (SIZE, SIZE, 3)},
        input_data=keras.ops.convert_to_tensor(  # a backend tensor, as keras-hub's tests
            np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype("float32")),
        expected_output_shape=(2,) + tuple(model.output.shape[1:]),
        expected_pyramid_output_keys=levels,
        expected_pyramid_image_sizes=[(SIZE // 2 ** int(k[1:]),) * 2 for k in levels],
        run_data_format_check=False,  # TF's CPU convolutions are channels_last only
    )


@pytest.mark.large
@pytest.mark.parametrize("library", ["keras_hub", pytest.param("keras_cv",
                                                                  marks=pytest.mark.large)])
@pytest.mark.parametrize("kind", ["mobilenet_v2", "add_attention"])
def test_pyramid_outputs_feed_retinanet(kind, library):
    """The two kinds the zoo's detection tests did not cover: one fit step each."""
    encoder = BACKBONES[kind](input_shape=(SIZE, SIZE, 3))
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype("float32")
    boxes = np.array([[[4, 4, 30, 30], [-1, -1, -1, -1]]] * 2, "float32")
    labels = np.array([[1, -1]] * 2)
    if library == "keras_hub":
        backbone = keras_hub.models.RetinaNetBackbone(
            image_encoder=encoder, min_level=3, max_level=5, use_p5=False,
            image_shape=(SIZE, SIZE, 3))
        detector = keras_hub.models.RetinaNetObjectDetector(
            backbone=backbone, num_classes=3, bounding_box_format="xyxy",
            pre_logits_num_conv_layers=1)
        detector.compile(optimizer=keras.optimizers.SGD(0.01))
        y = {"boxes": boxes, "labels": labels}
    else:
        keras_cv = pytest.importorskip("keras_cv")
        detector = keras_cv.models.RetinaNet(backbone=encoder, num_classes=3,
                                             bounding_box_format="xyxy")
        detector.compile(optimizer=keras.optimizers.SGD(0.01), classification_loss="focal",
                         box_loss="smoothl1")
        y = {"boxes": boxes, "classes": labels.astype("float32")}
    cra = next(l for l in encoder.layers if l.name.endswith("_cra"))
    before = cra.get_weights()[0].copy()
    history = detector.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before, cra.get_weights()[0])  # the CRA gates trained in it
