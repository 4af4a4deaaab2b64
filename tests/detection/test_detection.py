import json
import os

import numpy as np
import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("pycocotools")

from keras_cra.detection import boxes as boxes_lib  # noqa: E402
from keras_cra.detection import data as data_lib  # noqa: E402
from keras_cra.detection import metrics, scenes  # noqa: E402
from keras_cra.training import detect as detect_lib  # noqa: E402


def _one(box):
    return [np.array([box], "float32")]


def test_coco_metrics_hand_computed():
    gt, labels = _one([0, 0, 10, 10]), [np.array([2])]
    # A perfect detection: every threshold matches.
    perfect = metrics.coco_metrics(gt, labels, gt, labels, [np.array([0.9])])
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["mAP50"] == pytest.approx(1.0)
    # 10x10 is a small box (area < 32**2): no medium or large ground truth (-1).
    assert perfect["mAP_small"] == pytest.approx(1.0) and perfect["mAP_medium"] == -1
    # IoU 0.62 (62 / 100): a match at IoU thresholds .50, .55, .60, not at .65 ... .95,
    # so mAP@[.5:.95] = 3 / 10 and mAP@.75 = 0.
    partial = metrics.coco_metrics(gt, labels, _one([0, 0, 10, 6.2]), labels, [np.array([0.9])])
    assert partial["mAP"] == pytest.approx(0.3) and partial["mAP50"] == pytest.approx(1.0)
    assert partial["mAP75"] == pytest.approx(0.0)


def test_coco_metrics_crowd_regions_are_not_false_positives():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], "float32")]
    labels = [np.array([1, 1])]
    detections = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], "float32")]
    scores = [np.array([0.5, 0.9])]
    crowd = metrics.coco_metrics(gt, labels, detections, [np.array([1, 1])], scores,
                                 gt_crowd=[np.array([False, True])])
    assert crowd["mAP"] == pytest.approx(1.0)
    # Without the crowd box, the higher-scored detection is a false positive.
    alone = metrics.coco_metrics([gt[0][:1]], [labels[0][:1]], detections, [np.array([1, 1])],
                                 scores)
    assert alone["mAP"] < 0.6
    with pytest.raises(ValueError, match="no boxes"):
        metrics.coco_metrics([np.zeros((0, 4))], [np.zeros((0,))], [np.zeros((0, 4))],
                             [np.zeros((0,))], [np.zeros((0,))])
    with pytest.raises(ValueError, match="one entry per image"):
        metrics.coco_metrics(gt, labels, [], [], [])


def test_box_rules():
    b, lab = boxes_lib.clean([[-5, 2, 20, 30], [10, 10, 10, 40], [50, 50, 60, 60], [1, 1, 5, 5]],
                             [1, 2, 3, 4], height=40, width=40, crowd=[0, 0, 0, 1])
    # Clipped; zero-area dropped; outside the image (zero area after clipping) dropped;
    # crowd dropped.
    np.testing.assert_array_equal(b, [[0, 2, 20, 30]])
    np.testing.assert_array_equal(lab, [1])
    assert boxes_lib.clean(np.zeros((0, 4)), [], 10, 10)[0].shape == (0, 4)  # kept, empty
    np.testing.assert_allclose(boxes_lib.to_xyxy([[0.1, 0.2, 0.5, 0.6]], "rel_yxyx", 100, 200),
                               [[40, 10, 120, 50]])
    np.testing.assert_allclose(boxes_lib.to_xyxy([[1, 2, 3, 4]], "xywh", 10, 10), [[1, 2, 4, 6]])
    with pytest.raises(ValueError, match="box_format='cxcywh'"):
        boxes_lib.to_xyxy([[1, 2, 3, 4]], "cxcywh", 10, 10)


def test_scenes_are_deterministic_and_boxes_are_tight():
    a = scenes.make_scenes("train", 20, size=64, seed=3)
    b = scenes.make_scenes("train", 20, size=64, seed=3)
    test = scenes.make_scenes("test", 20, size=64, seed=3)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], test["images"])
    assert a["images"].shape == (20, 64, 64, 3) and a["images"].dtype == np.uint8
    counts = (a["labels"] >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and len(set(counts)) > 1
    for image, boxes, labels in zip(a["images"], a["boxes"], a["labels"]):
        ink = image[..., 0] > scenes.INK
        for (x0, y0, x1, y1), label in zip(boxes.astype(int), labels):
            if label < 0:
                assert (boxes[labels < 0] == -1).all()
                continue
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and 0 <= label <= 9
            # Tight: the box's first and last rows and columns hold ink.
            assert ink[y0, x0:x1].any() and ink[y1 - 1, x0:x1].any()
            assert ink[y0:y1, x0].any() and ink[y0:y1, x1 - 1].any()
    with pytest.raises(ValueError, match="size=20"):
        scenes.make_scenes("train", 2, size=20)
    with pytest.raises(ValueError, match="split='validation'"):
        scenes.make_scenes("validation", 2)


def test_training_targets_follow_the_rules():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices({
        "images": np.zeros((2, 64, 64, 3), np.uint8),
        "boxes": np.array([[[-4, 2, 20, 70], [5, 5, 5, 9], [1, 1, 9, 9]],
                           [[-1, -1, -1, -1]] * 3], "float32"),
        "labels": np.array([[1, 2, 3], [-1, -1, -1]], "int32"),
        "crowd": np.array([[False, False, True], [False] * 3]),
    })
    x, y = next(iter(data_lib.pipeline(ds, 2, 64, training=False)))
    np.testing.assert_array_equal(y["labels"].numpy(), [[1, -1, -1], [-1, -1, -1]])
    np.testing.assert_allclose(y["boxes"].numpy()[0, 0], [0, 2, 20, 64])
    # The image without boxes stays (a negative); images are normalized.
    assert x.shape == (2, 64, 64, 3) and float(x.numpy().max()) < 0


def test_datasets_without_boxes_or_with_broken_objects(tfds_dir):
    import tensorflow_datasets as tfds

    with pytest.raises(data_lib.DetectionDataError, match="has no boxes"):
        data_lib.load("fashion_mnist", "test", 64, data_dir=tfds_dir)
    # tfds' own mock generator draws each sequence feature's length independently, so
    # bbox and label lengths disagree: a clear error, not a crash deep in training.
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        ds, names, _ = data_lib.load("voc/2007", "train", 64, max_boxes=5)
        assert names[:2] == ["aeroplane", "bicycle"]
        with pytest.raises(Exception, match="have different lengths"):
            next(iter(ds))


@pytest.mark.large
def test_quick_run_stopped_resumed_and_exported(tmp_path, capsys, monkeypatch):
    """A --quick run of 2 epochs stopped after epoch 1 resumes at epoch 2 with the weights
    and optimizer state of last.keras (keras-hub's detector is rebuilt and compiled, then
    reads them), then exports (the run's --export, kept in its config.json); then the run
    folder's rules. One test, so that the detector trains and traces once less."""
    from keras_cra.training import callbacks

    real = callbacks.RunState.on_epoch_end

    def stop_after_first(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch == 0:
            raise _Stop

    monkeypatch.setattr(callbacks.RunState, "on_epoch_end", stop_after_first)
    out = tmp_path / "det"
    exported = tmp_path / "exported"
    with pytest.raises(_Stop):
        detect_lib.main(["--quick", "--epochs", "2", "--out", str(out), "--verbose", "0",
                         "--export", str(exported)])
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1
    assert not (out / "metrics.json").exists() and not exported.exists()
    monkeypatch.setattr(callbacks.RunState, "on_epoch_end", real)
    code = detect_lib.main(["--out", str(out), "--resume", "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 2
    assert len((out / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["epochs"] == 2
    for key in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"):
        assert -1 <= saved[key] <= 1
    assert saved["attention"] == "cra" and saved["eval_images"] == 24  # a short last batch
    for name in ("config.json", "last.keras", "history.csv", "state.json",
                 detect_lib.PREDICTIONS_PNG):
        assert (out / name).exists(), name
    assert os.listdir(out / "logs")
    # The export: SavedModel with NMS equal to Keras; builtins-only TFLite of the decoded
    # boxes and scores, equal to Keras within float tolerance.
    check = saved["export_verification"]
    assert check["saved_model_same_detections"] and check["saved_model_max_box_diff"] < 1e-3
    assert check["tflite_max_score_diff"] < 1e-3
    meta = json.loads((exported / "metadata.json").read_text())
    assert "BitwiseAnd" in meta["full_tflite_error"]
    assert not any("Flex" in op for op in meta["tflite_ops"])
    from keras_cra.detection import export as export_lib
    from keras_cra.export import tflite

    interp = tflite.interpreter(str(exported / export_lib.TFLITE))
    image = scenes.make_scenes("test", 1, size=64)["images"][0]
    boxes, scores = export_lib.run_tflite(interp, image)
    assert boxes.shape[-1] == 4 and scores.shape == (boxes.shape[0], 10)
    kept, classes, best = export_lib.nms(boxes, scores, score_threshold=0.0, max_detections=5)
    assert len(kept) == 5 and (np.diff(best) <= 0).all()
    # applications/detect.py on a scene image, through the SavedModel.
    from matplotlib.image import imread, imsave

    from keras_cra.detection import inference

    imsave(tmp_path / "scene.png", image)
    capsys.readouterr()
    assert inference.main([str(tmp_path / "scene.png"), "--model", str(exported),
                           "--min-score", "0"]) == 0
    assert "detection(s)" in capsys.readouterr().out
    assert imread(tmp_path / "scene.detections.png").std() > 0
    assert inference.main([str(tmp_path / "scene.png"), "--model", str(out)]) == 2
    assert "detector export folder" in capsys.readouterr().err
    # A second run on the folder is refused; resuming a finished run says so.
    assert detect_lib.main(["--quick", "--out", str(out), "--verbose", "0"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert detect_lib.main(["--out", str(out), "--resume", "--verbose", "0"]) == 2
    assert "finished all 2 epochs" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "50"], "--image-size must be a multiple of 32"),
    (["--backbone", "CRAResNet20"], "CIFAR-style"),
    (["--backbone", "NoSuchNet"], "Unknown backbone"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--dataset", "fashion_mnist"], "has no boxes"),
    (["--train-split", "validation"], "'train' and 'test'"),
])
def test_bad_flags(argv, message, tmp_path, capsys, tfds_dir):
    code = detect_lib.main(["--quick", "--out", str(tmp_path / "d"), "--data-dir", tfds_dir,
                            "--verbose", "0"] + argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err


class _Stop(Exception):
    pass


@pytest.mark.large
def test_backbone_weights_from_a_classifier(tmp_path):
    """--backbone-weights FILE.keras: a trained classifier's backbone layers start the detector."""
    from keras_cra.applications import CRAResNet18
    from keras_cra.detection.model import build_detector

    classifier = CRAResNet18(input_shape=(64, 64, 3), classes=7)
    classifier.save(tmp_path / "c.keras")
    detector = build_detector("CRAResNet18", 10, 64, head_convs=1,
                              backbone_weights=str(tmp_path / "c.keras"))
    encoder = detector.backbone.image_encoder
    for name in ("conv1_conv", "conv2_block1_cra", "conv5_block2_2_bn"):
        for a, b in zip(encoder.get_layer(name).weights, classifier.get_layer(name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = CRAResNet18(input_shape=(64, 64, 3), attention="se")
    other.save(tmp_path / "se.keras")
    with pytest.raises(ValueError, match="conv2_block1_cra.*same backbone and attention"):
        build_detector("CRAResNet18", 10, 64, backbone_weights=str(tmp_path / "se.keras"))


def _consistent_examples(builder, boxes, labels, crowd, height=40, width=80):
    """Examples shaped by the builder's own feature spec (tfds), with one object count for
    every sequence (tfds' random mock draws each sequence's length on its own)."""
    import tensorflow as tf

    info = builder.info.features.get_tensor_info()
    n = len(labels)
    given = {("objects", "bbox"): boxes, ("objects", "label"): labels,
             ("objects", "is_crowd"): crowd}

    def fill(key, spec):
        if isinstance(spec, dict):
            return {k: fill(key + (k,), v) for k, v in spec.items()}
        if key in given:
            return tf.constant(given[key], spec.dtype)
        if key == ("image",):
            return tf.constant(np.random.default_rng(0).integers(
                0, 256, (height, width, 3)), spec.dtype)
        shape = [n if d is None else d for d in spec.shape]
        return tf.zeros(shape, spec.dtype)

    example = fill((), dict(info))
    return tf.data.Dataset.from_tensors(example)


@pytest.mark.parametrize("name", ["voc/2007", "coco/2017"])
def test_tfds_conversion_on_the_builders_feature_spec(name):
    """tfds' relative yxyx boxes -> letterboxed xyxy pixels; crowd flags kept for evaluation."""
    import tensorflow_datasets as tfds

    rel = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.25, 0.9]],
                   "float32")
    labels = np.array([3, 7, 1])
    crowd = np.array([False, True, False])

    def as_dataset(self, *args, **kwargs):
        return _consistent_examples(self, rel, labels, crowd)

    with tfds.testing.mock_data(num_examples=1, as_dataset_fn=as_dataset,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        ds, names, n = data_lib.load(name, "train", 64, max_boxes=4)
        example = next(iter(ds))
    # 40x80 image, longer side to 64: scale 0.8, the image fills rows 0-31.
    scale = 0.8
    expected = np.array([[0.2 * 80, 0.1 * 40, 0.6 * 80, 0.5 * 40],
                         [0, 0, 80, 40]]) * scale
    boxes = example["boxes"].numpy()
    # The third box has zero height: dropped. Padding to max_boxes with -1.
    np.testing.assert_allclose(boxes[:2], expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(boxes[2:], -1)
    np.testing.assert_array_equal(example["labels"].numpy(), [3, 7, -1, -1])
    has_crowd = name.startswith("coco")
    np.testing.assert_array_equal(example["crowd"].numpy(), [False, has_crowd, False, False])
    assert example["images"].shape == (64, 64, 3)
    assert (example["images"].numpy()[32:] == 0).all()  # letterbox padding at the bottom
    # Training targets leave the crowd box out; evaluation keeps it flagged.
    _, y = next(iter(data_lib.pipeline(ds, 1, 64, training=False)))
    assert y["labels"].numpy()[0].tolist() == ([3, -1, -1, -1] if has_crowd else [3, 7, -1, -1])


def test_detector_export_verification_is_enforced():
    """As for a classifier export: outside the tolerances is a failure naming the check."""
    from keras_cra.detection.export import TOLERANCES, verification_failures

    good = {"saved_model_max_box_diff": 0.0, "tflite_max_box_diff": 0.01,
            "tflite_max_score_diff": 1e-5, "saved_model_same_detections": True}
    assert verification_failures(good) == []
    bad = dict(good, tflite_max_score_diff=0.2, saved_model_same_detections=False)
    failures = verification_failures(bad)
    assert failures[0].startswith("tflite_max_score_diff 2.00e-01 > ")
    assert "different number of boxes" in failures[1]
    assert verification_failures(dict(good, tflite_max_box_diff=float("nan")))  # NaN fails
    assert set(TOLERANCES) < set(good)
