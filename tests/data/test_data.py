import gzip
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_cra import data
from keras_cra.data import fashion_mnist


def test_debian_files_verify():
    files = fashion_mnist.verify_files()
    assert len(files["train_data"]) == 16 + 60000 * 28 * 28
    assert len(files["test_labels"]) == 8 + 10000


def test_missing_files_name_the_apt_package(tmp_path):
    with pytest.raises(fashion_mnist.FashionMnistFilesError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.verify_files(str(tmp_path))
    with pytest.raises(data.DataError, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", "train", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path))


def test_wrong_content_is_rejected(tmp_path):
    for name, *_ in fashion_mnist.FILES.values():
        shutil.copy(os.path.join(fashion_mnist.DEBIAN_DIR, name), tmp_path / name)
    # Same header, one flipped pixel: structurally valid, wrong content.
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.open(path).read())
    raw[100] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(fashion_mnist.FashionMnistFilesError, match="other content"):
        fashion_mnist.verify_files(str(tmp_path))
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(4)))
    with pytest.raises(fashion_mnist.FashionMnistFilesError, match="not the expected IDX"):
        fashion_mnist.verify_files(str(tmp_path))


def test_fashion_mnist_through_tfds(tfds_dir):
    ds, info = data.load("fashion_mnist", "test[:100]", data_dir=tfds_dir)
    assert info.num_classes == 10 and info.num_examples == 100
    assert info.class_names[0] == "T-shirt/top" and info.image_shape == (28, 28, 1)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    assert np.array(images).shape == (100, 28, 28, 1) and np.array(images).dtype == np.uint8
    # The same images as the raw IDX file (tfds shuffles the order on write).
    raw = np.frombuffer(fashion_mnist.verify_files()["test_data"], np.uint8, offset=16)
    raw = raw.reshape(-1, 28 * 28)
    hashes = {r.tobytes() for r in raw}
    assert all(img.reshape(-1).tobytes() in hashes for img in images)
    # A standard tfds builder reads the same prepared dataset.
    standard = tfds.builder("fashion_mnist", data_dir=tfds_dir)
    assert standard.is_prepared()


def test_unknown_split_and_dataset(tfds_dir):
    with pytest.raises(data.DataError, match="Available splits"):
        data.load("fashion_mnist", "validation", data_dir=tfds_dir)
    with pytest.raises(data.DataError, match="Unknown tfds dataset"):
        data.load("no_such_dataset_xyz", "train", data_dir=tfds_dir)
    with pytest.raises(data.DataError, match="Image folder not found"):
        data.load("folder:/no/such/folder", "train")


def test_tfds_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        ds, info = data.load("cifar10", "train")
        assert info.num_classes == 10
        batches = data.make_dataset(ds, 24, 8, 32, training=True, epochs=2)
        shapes = [tuple(x.shape) for x, _ in batches]
        assert shapes == [(8, 32, 32, 3)] * 6


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                size = (40 + i, 50)
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    ds, info = data.load(f"folder:{tmp_path}", "train")
    assert info.class_names == ["cat", "dog"] and info.num_examples == 12
    batches = list(data.make_dataset(ds, 12, 4, 32, style="imagenet", training=True, epochs=1))
    assert len(batches) == 3 and batches[0][0].shape == (4, 32, 32, 3)
    eval_batches = list(data.make_dataset(*data.load(f"folder:{tmp_path}", "test")[:1], 4, 2, 32,
                                          style="imagenet"))
    assert eval_batches[0][0].shape == (2, 32, 32, 3)


def _images(n=20, size=28, channels=1):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, size, size, channels), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 10)), x


def test_epochs_are_a_function_of_seed_and_epoch():
    ds, _ = _images()
    full = [x.numpy() for x, _ in data.make_dataset(ds, 20, 5, 28, training=True, seed=3, epochs=3)]
    resumed = [x.numpy() for x, _ in data.make_dataset(ds, 20, 5, 28, training=True, seed=3,
                                                       epochs=3, initial_epoch=2)]
    assert len(full) == 12 and len(resumed) == 4
    for a, b in zip(full[8:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(full[0], full[4])  # a new shuffle/augmentation each epoch


def test_eval_pipeline_is_identity_for_small_images_and_matches_preprocess_input():
    from keras_cra.applications import preprocess_input

    ds, x = _images(channels=3)
    batch = next(iter(data.make_dataset(ds, 20, 20, 28, channels=3, training=False)))[0].numpy()
    np.testing.assert_allclose(batch, preprocess_input(x.astype("float32")), rtol=1e-5, atol=1e-5)


def test_grayscale_becomes_rgb_and_imagenet_eval_crop():
    ds, x = _images(n=4, size=64, channels=1)
    batch = next(iter(data.make_dataset(ds, 4, 4, 56, channels=3, style="imagenet",
                                        preprocess=None)))[0].numpy()
    assert batch.shape == (4, 56, 56, 3)
    np.testing.assert_allclose(batch[..., 0], batch[..., 2])
    # resize 64 -> 64 (= 56 * 256/224), center crop 56: the center of the image.
    np.testing.assert_allclose(batch[..., 0], x[:, 4:60, 4:60, 0], atol=1e-3)


def test_cifar_train_augmentation_is_pad_crop_flip():
    ds, x = _images(n=8, channels=3)
    batch = next(iter(data.make_dataset(ds, 8, 8, 28, channels=3, training=True, preprocess=None)))[0]
    batch = batch.numpy().astype(np.uint8)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for img in batch:
        found = any(
            np.array_equal(img, c) or np.array_equal(img, c[:, ::-1])
            for p in padded for i in range(9) for j in range(9)
            for c in [p[i:i + 28, j:j + 28]]
        )
        assert found


def test_mix_and_randaugment_options():
    ds, _ = _images()
    x, y = next(iter(data.make_dataset(ds, 20, 10, 28, training=True, mix="cutmix", num_classes=10)))
    assert y.shape == (10, 10)
    np.testing.assert_allclose(y.numpy().sum(-1), 1.0, rtol=1e-5)
    x, y = next(iter(data.make_dataset(ds, 20, 10, 28, channels=3, training=True, randaugment=True)))
    assert x.shape == (10, 28, 28, 3)
    with pytest.raises(ValueError, match="num_classes"):
        data.make_dataset(ds, 20, 10, 28, training=True, mix="mixup")


def test_too_few_examples_for_a_batch():
    with pytest.raises(data.DataError, match="fewer than one batch"):
        data.steps_per_epoch(10, 32)


def _photo_folder(root, classes=("cat", "dog"), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in classes:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    return root


def test_image_folder_slices_as_tfds_does(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    ds, info = data.load(f"folder:{root}", "test[:4]")
    assert info.num_examples == 4 and len(list(ds)) == 4
    whole = [y for _, y in tfds.folder_dataset.ImageFolder(str(root)).as_dataset(
        split="test", as_supervised=True, shuffle_files=False)]
    # tfds' own reading of the whole split, sliced: the same examples in the same order.
    assert [int(y) for _, y in ds] == [int(y) for y in whole[:4]]
    ds, info = data.load(f"folder:{root}", "train[50%:]+test[:1]")
    assert info.num_examples == 4 and len(list(ds)) == 4
    with pytest.raises(data.DataError, match="holds no examples"):
        data.load(f"folder:{root}", "test[:0]")
    with pytest.raises(data.DataError, match="Unknown split or slice"):
        data.load(f"folder:{root}", "valid")


@pytest.mark.parametrize("case, named", [
    ("gif_as_jpg", "a GIF image under a .jpg/.png name"),
    ("animated_png", "a GIF image under a .jpg/.png name"),
    ("bmp_file", "of a type the folder reader does not take"),
    ("webp_file", "of a type the folder reader does not take"),
    ("symlink_loop", "a symbolic link loop"),
    ("broken_link", "a broken symbolic link"),
])
def test_image_folder_names_every_file_it_cannot_use(tmp_path, case, named):
    from PIL import Image

    root = _photo_folder(tmp_path / "photos")
    cat = root / "train" / "cat"
    frames = [Image.new("RGB", (20, 24), c) for c in ("red", "blue")]
    if case == "gif_as_jpg":
        frames[0].save(cat / "x.jpg", format="GIF")
    elif case == "animated_png":
        frames[0].save(cat / "x.png", format="GIF", save_all=True, append_images=frames[1:])
    elif case == "bmp_file":
        frames[0].save(cat / "x.bmp")
    elif case == "webp_file":
        (cat / "x.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    elif case == "symlink_loop":
        os.symlink(cat / "y.png", cat / "x.png")
        os.symlink(cat / "x.png", cat / "y.png")
    else:
        os.symlink(tmp_path / "gone.png", cat / "x.png")
    with pytest.raises(data.DataError, match=named) as info:
        data.load(f"folder:{root}", "train")
    assert "x." in str(info.value)


def test_image_folder_with_one_class_is_refused(tmp_path):
    root = _photo_folder(tmp_path / "photos", classes=("cat",))
    with pytest.raises(data.DataError, match="at least two"):
        data.load(f"folder:{root}", "train")


def test_lazy_epochs_keep_the_data_order_of_per_epoch_shuffles():
    """Epochs are built when reached; the order is tf.data's own shuffle with the Python-int
    seed of each epoch, as before (seed 0 included: Dataset.shuffle cannot take a tensor
    seed then)."""
    x = np.arange(300, dtype=np.uint8).reshape(300, 1, 1, 1).repeat(8, 1).repeat(8, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(300)))
    for seed in (0, 5):
        tf.random.set_seed(seed)
        got = np.concatenate([y.numpy() for _, y in data.make_dataset(
            ds, 300, 100, 8, training=True, seed=seed, epochs=3)])
        want = np.concatenate([[int(y) for _, _, y in ds.enumerate().map(
            lambda i, example: (i, *example)).shuffle(
                300, seed=(seed * 100_003 + e) % (2**31 - 1), reshuffle_each_iteration=False)]
            for e in range(3)])
        np.testing.assert_array_equal(got, want)
    # A long run's pipeline is one graph, not one per epoch: it starts at once.
    first = next(iter(data.make_dataset(ds, 300, 100, 8, training=True, epochs=100_000)))
    assert first[0].shape == (100, 8, 8, 3)
