import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import keras_cra.applications as A
from keras_cra.applications import weights as W


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def _x():
    return np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")


def test_weights_file_round_trip(tmp_path):
    model = A.CRAResNet20(classes=10)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    loaded = A.CRAResNet20(classes=10, weights=str(path))
    np.testing.assert_array_equal(model.predict(_x(), verbose=0), loaded.predict(_x(), verbose=0))


def test_keras_file_as_weights_including_notop(tmp_path):
    model = A.CRAResNet20(classes=10)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = A.CRAResNet20(classes=10, weights=str(path))
    np.testing.assert_array_equal(model.predict(_x(), verbose=0), loaded.predict(_x(), verbose=0))
    notop = A.CRAResNet20(include_top=False, weights=str(path))
    np.testing.assert_array_equal(
        notop.get_layer("conv4_block3_cra").get_weights()[0],
        model.get_layer("conv4_block3_cra").get_weights()[0],
    )


def test_other_architecture_says_which_layer(tmp_path, recwarn):
    path = tmp_path / "m.keras"
    A.CRAResNet20(classes=10).save(path)
    with pytest.raises(ValueError, match=r"Layer 'predictions'.*\(64, 10\).*\(64, 5\)|\(64, 5\).*\(64, 10\)"):
        A.CRAResNet20(classes=5, weights=str(path))
    with pytest.raises(ValueError, match=r"no layer named 'conv2_block4_1_conv'"):
        A.CRAResNet32(classes=10, weights=str(path))
    wpath = tmp_path / "w.weights.h5"
    A.CRAResNet20(classes=10).save_weights(wpath)
    with pytest.raises(ValueError, match=r"Could not load the weights file"):
        A.CRAResNet32(classes=10, weights=str(wpath))
    # One clear error, not Keras' warning per skipped sublayer first.
    assert not [w for w in recwarn if "Skipping nested container" in str(w.message)]


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.weights.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=r"Could not load the weights file"):
        A.CRAResNet20(weights=str(path))
    kpath = tmp_path / "bad.keras"
    kpath.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"Could not read the model file"):
        A.CRAResNet20(weights=str(kpath))


def test_registered_weights_missing_says_what_to_do(keras_home):
    with pytest.raises(FileNotFoundError) as info:
        A.CRAResNet50(weights="imagenet")
    message = str(info.value)
    assert "best_model.pkl" in message and "keras-cra convert" in message
    assert str(keras_home / "models" / "cra_resnet50_imagenet.weights.h5") in message


def _register_tiny(tmp_path, origin, sha256):
    W.register(W.WeightsEntry(
        name="tiny_test", model_name="CRAResNet20", file_name="tiny_test.weights.h5",
        origin=origin, sha256=sha256, attention="cra", description="test weights",
        how_to_get="(test)",
    ))


@pytest.fixture
def tiny_weights(tmp_path):
    source = A.CRAResNet20(classes=1000)
    path = tmp_path / "served" / "tiny_test.weights.h5"
    path.parent.mkdir()
    source.save_weights(path)
    yield source, path
    W.WEIGHTS.pop(("CRAResNet20", "tiny_test"), None)


def test_registered_weights_download_through_keras_cache(keras_home, tiny_weights, tmp_path):
    source, path = tiny_weights
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _register_tiny(tmp_path, path.as_uri(), digest)
    model = A.CRAResNet20(weights="tiny_test")
    assert (keras_home / "models" / "tiny_test.weights.h5").exists()
    np.testing.assert_array_equal(model.predict(_x(), verbose=0), source.predict(_x(), verbose=0))
    notop = A.CRAResNet20(weights="tiny_test", include_top=False, input_shape=(None, None, 3))
    np.testing.assert_array_equal(
        notop.get_layer("conv2_block1_cra").get_weights()[1],
        source.get_layer("conv2_block1_cra").get_weights()[1],
    )


def test_registered_weights_bad_hash_is_refused(keras_home, tiny_weights, tmp_path):
    _, path = tiny_weights
    _register_tiny(tmp_path, path.as_uri(), "0" * 64)
    with pytest.raises(ValueError, match="hash"):
        A.CRAResNet20(weights="tiny_test")
    cached = keras_home / "models" / "tiny_test.weights.h5"
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, cached)
    with pytest.raises(ValueError, match="does not match its registered sha256"):
        A.CRAResNet20(weights="tiny_test")


def test_install_into_cache(keras_home, tiny_weights, tmp_path):
    source, path = tiny_weights
    _register_tiny(tmp_path, None, None)
    target = W.install(path, "CRAResNet20", "tiny_test")
    assert target.startswith(str(keras_home))
    model = A.CRAResNet20(weights="tiny_test")
    np.testing.assert_array_equal(model.get_weights()[0], source.get_weights()[0])


def test_preprocess_input_torch_mode():
    x = np.full((1, 2, 2, 3), 255.0, "float32")
    x[..., 1] = 0.0
    y = A.preprocess_input(x.copy())
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (x / 255.0 - mean) / std
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_decode_predictions_with_local_class_index(tmp_path):
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    path = tmp_path / "imagenet_class_index.json"
    path.write_text(json.dumps(index))
    preds = np.zeros((2, 1000), "float32")
    preds[0, [3, 7, 1]] = [0.5, 0.3, 0.2]
    preds[1, 999] = 1.0
    decoded = A.decode_predictions(preds, top=3, class_index_path=str(path))
    assert decoded[0] == [("n00000003", "class_3", 0.5), ("n00000007", "class_7", pytest.approx(0.3)),
                          ("n00000001", "class_1", pytest.approx(0.2))]
    assert decoded[1][0][:2] == ("n00000999", "class_999")
    with pytest.raises(ValueError, match=r"Received: preds.shape=\(2, 10\)"):
        A.decode_predictions(np.zeros((2, 10)), class_index_path=str(path))


# ------------------------------------------------------------- what ships with the package

def test_shipped_class_index_is_keras_layout_with_tfds_ids():
    """Offline `decode_predictions`: the WordNet ids are tfds' own imagenet2012 labels.txt,
    in class order; the names are Keras' (first lemma, underscores)."""
    import tensorflow_datasets as tfds

    from keras_cra.applications import decode_predictions, imagenet

    index = imagenet.load_class_index()
    wnids = tfds.builder_cls("imagenet2012").code_path.parent.joinpath("labels.txt").read_text()
    assert [index[i][0] for i in range(1000)] == wnids.split()
    assert index[386] == ("n02504458", "African_elephant") and index[0][1] == "tench"
    preds = np.zeros((1, 1000), "float32")
    preds[0, [386, 101, 385]] = [0.7, 0.2, 0.1]
    assert [p[1] for p in decode_predictions(preds, top=3)[0]] == [
        "African_elephant", "tusker", "Indian_elephant"]


@pytest.mark.large
def test_shipped_fashion_mnist_weights_offline(tfds_dir, tmp_path, monkeypatch):
    """In a process with an empty Keras cache: the documented inputs reach the stated
    accuracy on the 10,000 real Fashion-MNIST test images."""
    import tensorflow_datasets as tfds

    from keras_cra.applications import CRAResNet20, preprocess_input
    from keras_cra.applications import weights as weights_lib
    from keras_cra.files import sha256_of

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    entry = weights_lib.WEIGHTS[("CRAResNet20", "fashion_mnist")]
    path = os.path.join(weights_lib.DATA_DIR, entry.file_name)
    assert sha256_of(path) == entry.sha256
    model = CRAResNet20(weights="fashion_mnist")
    assert model.input_shape == (None, 28, 28, 3) and model.output_shape == (None, 10)
    test = tfds.as_numpy(tfds.builder("fashion_mnist", data_dir=tfds_dir).as_dataset(
        split="test", batch_size=-1, as_supervised=True))
    images, labels = test
    x = preprocess_input(np.repeat(images, 3, axis=-1).astype("float32"))
    top1 = float(np.mean(model.predict(x, batch_size=500, verbose=0).argmax(-1) == labels))
    assert top1 >= 0.89
    assert f"{top1:.2%}" == weights_lib.FASHION_MNIST_ACCURACY
    assert not os.path.exists(tmp_path / "empty" / "models")  # nothing fetched or cached


def test_fashion_mnist_class_names_are_tfds_order(tfds_dir):
    import tensorflow_datasets as tfds

    from keras_cra.applications import weights as weights_lib

    names = tfds.builder("fashion_mnist", data_dir=tfds_dir).info.features["label"].names
    assert list(weights_lib.FASHION_MNIST_CLASSES) == names  # tfds' own class names, in order
