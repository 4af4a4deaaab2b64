import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_cra.export import ExportError, export_model, tflite
from keras_cra.export import cli as export_cli
from keras_cra.export import exporter
from keras_cra.export import verify as verify_lib
from tests.helpers import one_error, own_stderr_lines

# Tests sharing the trained model run on one xdist worker (--dist loadgroup), in the large
# lane (make test-large): one training and a full export of every variant.
pytestmark = [pytest.mark.xdist_group("trained_cra20"), pytest.mark.large]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = exporter.TFLITE_VARIANTS


@pytest.fixture(scope="module")
def trained_cra20(tfds_dir, tmp_path_factory):
    """CRAResNet20 trained briefly on Fashion-MNIST (the demo's recipe, shortened: 96 steps
    of 32 images; top-1 0.69 on the 1000 test images the export verifies on)."""
    from keras_cra.training import train as train_lib

    out = tmp_path_factory.mktemp("run") / "r"
    train_lib.train(train_lib.TrainConfig(
        model="CRAResNet20", train_split="train[:1536]", eval_split="test[:1000]", epochs=2,
        batch_size=32, schedule="cosine", warmup_epochs=0.25, data_dir=tfds_dir,
        out=str(out), verbose=0))
    return str(out / "last.keras")


@pytest.fixture(scope="module")
def full_export(trained_cra20, tfds_dir, tmp_path_factory):
    """`(folder, report)` of one export of every variant, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("export") / "saved_models" / "cra20"
    report = export_model(trained_cra20, out, dataset="fashion_mnist", data_dir=tfds_dir,
                          verify_examples=1000, calibration_batches=8, latency_repeats=3)
    return out, report


def _check_artifacts(folder, variants=VARIANTS):
    names = set(os.listdir(folder))
    assert {"saved_model", "labels.txt", "metadata.json", "verification.json"} <= names
    assert {f"model_{v}.tflite" for v in variants} <= names
    metadata = json.loads((folder / "metadata.json").read_text())
    for v in variants:
        flat = (folder / f"model_{v}.tflite").read_bytes()
        assert not any("Flex" in op for op in tflite.op_names(flat)), v
        assert metadata["sha256"][f"model_{v}.tflite"] == exporter.sha256_of(folder / f"model_{v}.tflite")
    return metadata, json.loads((folder / "verification.json").read_text())


def test_export_trained_cra_resnet20(trained_cra20, full_export, tfds_dir):
    out, report = full_export
    metadata, saved_report = _check_artifacts(out)
    assert saved_report["summary"] == report["summary"]
    rows = report["artifacts"]
    assert report["examples"] == 1000
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5 and rows["saved_model"]["top1_agreement"] == 1.0
    assert rows["float32"]["max_abs_diff"] <= 1e-4
    assert rows["float16"]["max_abs_diff"] <= 1e-2
    assert rows["keras"]["accuracy"] > 0.6  # it did train
    assert 100 * (rows["keras"]["accuracy"] - rows["int8"]["accuracy"]) <= 1.0
    for v in VARIANTS:
        assert rows[v]["latency_ms_1_thread"] > 0 and rows[v]["size_mb"] > 0
    assert rows["float16"]["size_mb"] < rows["float32"]["size_mb"]
    assert rows["int8"]["size_mb"] < rows["float16"]["size_mb"]
    assert metadata["classes"][0] == "T-shirt/top"
    assert (out / "labels.txt").read_text().splitlines()[9] == "Ankle boot"
    assert metadata["input_size"] == [28, 28, 3]
    # Reload and run each artifact on real images.
    x, y, _ = verify_lib.validation_data(keras.saving.load_model(trained_cra20), "fashion_mnist",
                                       "test", tfds_dir, 64)
    for v in VARIANTS:
        probs = tflite.run(str(out / f"model_{v}.tflite"), x)
        assert probs.shape == (64, 10) and np.mean(probs.argmax(-1) == y) > 0.5


def test_saved_model_serves_raw_pixels_without_keras_cra(trained_cra20, full_export, tmp_path):
    out, _ = full_export
    model = keras.saving.load_model(trained_cra20)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 3), dtype=np.uint8)
    from keras_cra.applications import preprocess_input

    expected = keras.ops.softmax(model(preprocess_input(pixels.astype("float32")))).numpy()
    np.save(tmp_path / "pixels.npy", pixels)
    script = (
        "import sys, numpy as np\n"
        "sys.modules['keras_cra'] = None\n"  # importing keras_cra now fails
        "import tensorflow as tf\n"
        f"m = tf.saved_model.load({str(out / 'saved_model')!r})\n"
        f"x = np.load({str(tmp_path / 'pixels.npy')!r})\n"
        "y = m.signatures['serving_default'](images=tf.constant(x))['output_0'].numpy()\n"
        f"np.save({str(tmp_path / 'served.npy')!r}, y)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, atol=1e-5)


@pytest.mark.slow  # a full ResNet-50 export: about 90 s on 2 cores
def test_export_cra_resnet50_imagenet_size(tmp_path):
    from keras_cra.applications import CRAResNet50

    model = CRAResNet50(weights=None)
    out = tmp_path / "cra50"
    report = export_model(model, out, dataset=None, max_int8_drop=None, latency_repeats=2)
    _check_artifacts(out)
    rows = report["artifacts"]
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5
    assert rows["float32"]["max_abs_diff"] <= 1e-4
    assert rows["float16"]["max_abs_diff"] <= 1e-2
    photos = report["photos"]
    assert photos["saved_model"]["top1_agreement"] == 1.0
    assert photos["float32"]["max_abs_diff"] <= 1e-4


def test_int8_with_integer_io(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3)(inputs)
    from keras_cra.layers import CRA

    x = keras.layers.GlobalAveragePooling2D()(CRA()(x))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    rng = np.random.default_rng(0)
    calib = [rng.normal(size=(8, 16, 16, 3)).astype("float32")]
    for io in ("int8", "uint8"):
        flat = tflite.convert(model, "int8", representative_data=calib, integer_io=io)
        details = tflite.interpreter(flat).get_input_details()[0]
        assert details["dtype"] == np.dtype(io)
        probs = tflite.run(flat, calib[0])
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=0.05)


def test_refuses_to_overwrite_and_is_atomic(trained_cra20, tfds_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("old")
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="not an earlier export.*Nothing was deleted"):
            export_model(trained_cra20, mine, dataset="fashion_mnist", data_dir=tfds_dir,
                         overwrite=overwrite)
    assert os.listdir(mine) == ["keep.txt"]
    # An earlier export (its metadata.json and export files only) needs overwrite=True.
    out = tmp_path / "e"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({"preprocessing": {}, "sha256": {}}))
    (out / "labels.txt").write_text("old")
    with pytest.raises(ExportError, match="holds an earlier export; pass overwrite=True"):
        export_model(trained_cra20, out, dataset="fashion_mnist", data_dir=tfds_dir)
    # A failing verification (a bound no int8 model can meet: the drop is >= -100 points)
    # leaves the old export untouched and no temp folders.
    with pytest.raises(ExportError, match="Verification failed"):
        export_model(trained_cra20, out, dataset="fashion_mnist", data_dir=tfds_dir,
                     verify_examples=100, variants=("int8",), max_int8_drop=-1000.0,
                     overwrite=True, latency_repeats=1)
    assert (out / "labels.txt").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["e", "mine"]
    # The disk fills while a TFLite file is written: one DiskFullError, the earlier export
    # intact, nothing half-written left.
    import errno

    from keras_cra.errors import DiskFullError
    from keras_cra.export.formats import FORMATS

    def disk_full(model, path, context):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    original = FORMATS["float32"].write
    FORMATS["float32"].write = disk_full
    try:
        with pytest.raises(DiskFullError, match="disk is full"):
            export_model(trained_cra20, out, dataset="fashion_mnist", data_dir=tfds_dir,
                         verify_examples=16, variants=("float32",), overwrite=True,
                         latency_repeats=1)
    finally:
        FORMATS["float32"].write = original
    assert (out / "labels.txt").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["e", "mine"]


def test_clear_errors(tmp_path, trained_cra20):
    bogus = tmp_path / "x.keras"
    bogus.write_text("nope")
    with pytest.raises(ExportError, match="is not a readable .keras model"):
        export_model(str(bogus), tmp_path / "o1", dataset=None)
    with pytest.raises(ExportError, match="model does not exist"):
        export_model(str(tmp_path / "missing.txt"), tmp_path / "o2", dataset=None)
    with pytest.raises(ValueError, match=r"Received: representative_data batch shape=\(2, 5\)"):
        tflite.convert(keras.saving.load_model(trained_cra20), "int8",
                       representative_data=[np.zeros((2, 5), "float32")])
    # An output folder that cannot be created (its parent is a regular file;
    # unlike a read-only folder, this also fails for root).
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ExportError, match="--out cannot be made: .* is a file"):
        export_model(trained_cra20, not_a_folder / "out", dataset=None)


@keras.saving.register_keras_serializable(package="tests")
class PythonSideEffectLayer(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.strings.to_number(tf.strings.as_string(x))  # needs Flex ops


def test_unsupported_layer_is_named(tmp_path):
    inputs = keras.Input((4, 4, 3))
    x = PythonSideEffectLayer(name="stringy")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises(ExportError, match=r"stringy \(PythonSideEffectLayer\)"):
        export_model(model, tmp_path / "o", dataset=None, variants=("float32",))


def test_cli(trained_cra20, tfds_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "training/export.py", trained_cra20, "--out", str(out), "--data-dir",
         tfds_dir, "--verify-examples", "100", "--variants", "float32", "--max-int8-drop", "-1"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Export verification" in done.stdout and (out / "model_float32.tflite").exists()
    # Bad input (the script above is a two-line wrapper of this main).
    assert "holds an earlier export; pass overwrite=True (--overwrite)" in one_error(
        export_cli.main, [trained_cra20, "--out", str(out)], capsys)


def test_classify_app_with_every_kind_of_model(trained_cra20, full_export, tfds_dir, tmp_path,
                                               capsys):
    """applications/classify.py on real Fashion-MNIST test images (PNG files), with the
    export's .tflite, its SavedModel and the .keras file."""
    from PIL import Image

    from keras_cra import data, inference

    ds, info = data.load("fashion_mnist", "test[:100]", tfds_dir)
    folder = tmp_path / "images"
    folder.mkdir()
    truth = []
    for i, (image, label) in enumerate(ds):
        Image.fromarray(image.numpy()[..., 0]).save(folder / f"{i:02d}.png")
        truth.append(info.class_names[int(label)])
    out, _ = full_export
    paths = inference.image_paths(str(folder))
    assert len(paths) == 100
    results = {}
    for model in (out / "model_float32.tflite", out / "saved_model", trained_cra20):
        classifier = inference.load_classifier(str(model))
        assert classifier.labels == info.class_names  # labels.txt / the run's config.json
        results[classifier.kind + str(model)[-10:]] = inference.classify(classifier, paths)
    keras_top1 = [r["top"][0][0] for r in results["keras" + trained_cra20[-10:]]]
    # The model scores about 0.69 on these test images (chance: 0.1); 100 images keep a
    # correct classify above 0.5 (P(below) about 2e-5), while misread images fall to chance.
    assert np.mean([p == t for p, t in zip(keras_top1, truth)]) >= 0.5
    for name, rows in results.items():
        assert [r["top"][0][0] for r in rows] == keras_top1, name
        assert all(len(r["top"]) == 5 and r["latency_ms"] > 0 for r in rows)
        assert all(abs(sum(p for _, p in r["top"]) - 1) < 0.2 for r in rows)
    # The CLI prints the same top-1 for each image.
    script = os.path.join(ROOT, "applications", "classify.py")
    done = subprocess.run([sys.executable, script, str(folder), "--model",
                           str(out / "model_float32.tflite"), "--top", "1"],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert done.returncode == 0, own_stderr_lines(done.stderr)
    printed = [l.split("%", 1)[1].strip() for l in done.stdout.splitlines() if "%" in l]
    assert printed == keras_top1
    # Bad input: one error line each.
    for argv, message in (([str(folder / "nope.png"), "--model", trained_cra20],
                           "The image does not exist"),
                          ([str(tmp_path), "--model", trained_cra20], "holds no"),
                          ([str(folder), "--model", str(tmp_path / "m.onnx")],
                           "--model does not exist")):
        assert inference.main(argv) == 2
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(err) == 1 and message in err[0], err


def test_folder_dataset_trains_exports_and_classifies_with_its_class_names(tmp_path, capsys):
    """A model trained on an image folder exports (verification and calibration slices of
    the folder) with the folder's class names in labels.txt, and classify prints them."""
    from PIL import Image

    from keras_cra import inference
    from keras_cra.training import train as train_lib

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for split, n in (("train", 24), ("test", 12)):
        for label, value in (("cat", 40), ("dog", 200)):  # two easily told apart classes
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(value, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    run = tmp_path / "run"
    train_lib.train(train_lib.TrainConfig(
        model="CRAResNet20", dataset=f"folder:{root}", train_split="train",
        eval_split="test", epochs=2, batch_size=16, image_size=32, out=str(run), verbose=0))
    out = tmp_path / "export"
    export_model(str(run / "last.keras"), out, dataset=f"folder:{root}", split="test",
                 verify_examples=8, calibration_batches=1, variants=("float32",),
                 latency_repeats=1, max_int8_drop=None)
    assert (out / "labels.txt").read_text().split() == ["cat", "dog"]
    assert inference.main([str(root / "test" / "dog" / "0.png"), "--model",
                           str(out / "model_float32.tflite")]) == 0
    printed = capsys.readouterr().out
    assert "cat" in printed and "dog" in printed and "class_" not in printed
