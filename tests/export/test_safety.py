"""A model file from outside is data: no SavedModel op outside the allow-list runs, and an
export whose files differ from its recorded sha256 is refused by name."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_cra import inference
from keras_cra.detection import inference as detect_app
from keras_cra.errors import ModelIntegrityError, UnsafeModelError
from keras_cra.export import safety
from keras_cra.training import evaluate as evaluate_lib
from tests.helpers import one_error


def _hostile_saved_model(path, marker, attack):
    """A SavedModel shaped like our classifier exports whose serving function also does
    `attack` (what an attacker would hand a user)."""

    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.float32)])
        def serve(self, inputs):
            probs = tf.nn.softmax(tf.reduce_mean(inputs, [1, 2]))
            if attack == "write":
                tf.io.write_file(marker, "ran")
            elif attack == "read":
                probs += 0.0 * tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")),
                                       tf.float32)
            elif attack == "py_function":
                probs = tf.py_function(lambda p: open(marker, "w").write("ran") and p,
                                       [probs], tf.float32)
            elif attack == "nested":  # the write inside a cond branch, one function deeper
                probs = tf.cond(tf.reduce_sum(inputs) > -1.0,
                                lambda: tf.identity(probs) + 0.0 * tf.cast(
                                    tf.size(tf.io.matching_files("/tmp/*")), tf.float32),
                                lambda: probs)
            return {"output_0": probs}

    module = Hostile()
    tf.saved_model.save(module, str(path), signatures={
        "serving_preprocessed": module.serve, "serving_default": module.serve})
    return path


ATTACKS = {"write": "WriteFile", "read": "ReadFile", "py_function": "EagerPyFunc",
           "nested": "MatchingFiles"}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_saved_model_is_refused_before_anything_runs(tmp_path, capsys, attack):
    marker = tmp_path / "marker"
    path = _hostile_saved_model(tmp_path / "model", str(marker), attack)
    with pytest.raises(UnsafeModelError, match=ATTACKS[attack]):
        safety.check_saved_model(str(path))
    # Every command that takes a SavedModel: one error line naming the op, nothing ran.
    with pytest.raises(UnsafeModelError, match=ATTACKS[attack]):
        evaluate_lib.load_predictor(str(path))
    image = tmp_path / "x.png"
    tf.io.write_file(str(image), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    assert ATTACKS[attack] in one_error(inference.main, [str(image), "--model", str(path)],
                                        capsys)
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "metadata.json").write_text(json.dumps({"image_size": 64, "class_names": ["a"]}))
    os.rename(path, detector / "saved_model")
    assert ATTACKS[attack] in one_error(detect_app.main, [str(image), "--model",
                                                          str(detector)], capsys)
    assert not marker.exists()


@pytest.mark.large
def test_our_own_exports_pass_the_check(tmp_path):
    """What our exporters write (classifier SavedModels of CRA, SE, ECA; MobileNetV2's gather
    path) holds only allowed ops; the checkpoint ops stay in the saver's functions."""
    import keras_cra
    from keras_cra.export.saved_model import write_saved_model

    for name, model in {
        "cra": keras_cra.applications.CRAResNet20(classes=10, input_shape=(28, 28, 3)),
        "mnv2": keras_cra.applications.CRAMobileNetV2(classes=4, input_shape=(40, 40, 3),
                                                      alpha=0.35),
        "se": keras_cra.applications.CRAResNet20(classes=10, input_shape=(28, 28, 3),
                                                 attention="se"),
        "eca": keras_cra.applications.CRAResNet20(classes=10, input_shape=(28, 28, 3),
                                                  attention="eca"),
    }.items():
        path = str(tmp_path / name)
        write_saved_model(model, path)
        safety.check_saved_model(path)
        runnable, saver = safety.saved_model_ops(path)
        assert "Conv2D" in runnable and "Sigmoid" in runnable, name
        assert {"SaveV2", "RestoreV2"} <= set(saver), name
        assert not {"SaveV2", "RestoreV2"} & set(runnable), name


def test_checkpoint_ops_outside_the_saver_are_refused(tmp_path):
    class Saver(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32)])
        def serve(self, x):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "dump"), tensor_names=["x"],
                              shape_and_slices=[""], tensors=[x])
            return {"output_0": x}

    module = Saver()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    with pytest.raises(UnsafeModelError, match="SaveV2"):
        safety.check_saved_model(str(tmp_path / "m"))


def test_not_a_saved_model_is_one_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not a SavedModel protocol buffer"):
        safety.check_saved_model(str(tmp_path / "m"))


def _export_folder(tmp_path):
    """A classifier export folder as the exporter lays it out (float32 TFLite + metadata with
    the sha256 record), without the verification run."""
    import keras_cra
    from keras_cra.export.formats import FORMATS

    folder = tmp_path / "export"
    folder.mkdir()
    model = keras_cra.applications.CRAResNet20(classes=10, input_shape=(28, 28, 1))
    tflite_path = str(folder / FORMATS["float32"].artifact)
    FORMATS["float32"].write(model, tflite_path, {})
    (folder / "labels.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    (folder / "metadata.json").write_text(json.dumps(
        {"preprocessing": "torch", "sha256": safety.sha256_record(str(folder), [tflite_path])}))
    return folder, tflite_path


def test_a_changed_tflite_file_in_an_export_is_refused(tmp_path, capsys):
    folder, tflite_path = _export_folder(tmp_path)
    classifier = inference.load_classifier(tflite_path)  # intact: loads
    assert classifier.labels[3] == "c3"
    data = bytearray(open(tflite_path, "rb").read())
    data[len(data) // 2] ^= 0x10  # one bit flipped in the weights
    open(tflite_path, "wb").write(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 differs"):
        inference.load_classifier(tflite_path)
    image = tmp_path / "x.png"
    tf.io.write_file(str(image), tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)))
    assert os.path.basename(tflite_path) in one_error(
        inference.main, [str(image), "--model", tflite_path], capsys)
