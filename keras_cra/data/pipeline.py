"""tf.data input pipelines for image classification.

Every random choice (shuffle order, crops, flips) is a stateless function of
`(seed, epoch, example index)`, so epoch `e` sees exactly the same batches
whether a run goes straight through or is resumed at epoch `e`.
"""

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_cra.applications.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401
from keras_cra.data import fashion_mnist

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_DATASET = "fashion_mnist"


class DataError(ValueError):
    """A dataset, split or folder that cannot be used (message is for users)."""


@dataclasses.dataclass
class DatasetInfo:
    name: str
    num_classes: int
    class_names: list
    num_examples: int
    image_shape: tuple  # (H, W, C) of the stored images, None where it varies


def _count(ds):
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda c, _: c + 1))


def _split_examples(info_splits, split, ds=None):
    if not list(info_splits) and ds is not None:
        return _count(ds)  # builders without split metadata (e.g. tfds mocks)
    try:
        return info_splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise DataError(
            f"Unknown split. Available splits: {sorted(info_splits)}. "
            f"Received: split={split!r}"
        ) from e


def load(name, split, data_dir=None, manual_dir=None):
    """Loads `(image uint8 HWC, label int)` pairs and a `DatasetInfo`.

    Args:
        name: a tfds image-classification dataset name (`"fashion_mnist"`,
            `"cifar10"`, `"imagenette/320px"`, `"imagenet2012"`, ...), or
            `"folder:/path"` for a folder laid out as
            `path/<split>/<class>/<image>` (tfds ImageFolder).
        split: a tfds split, slicing allowed (`"train[:512]"`).
        data_dir: tfds data folder (default: tfds' own).
        manual_dir: folder of manually downloaded files (e.g. ImageNet).
            For `fashion_mnist` it defaults to Debian's offline files.

    Returns:
        `(dataset, info)`.
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"`dataset` must be a non-empty string. Received: dataset={name!r}")
    if name.startswith("folder:"):
        root = name[len("folder:"):]
        if not os.path.isdir(root):
            raise DataError(f"Image folder not found. Received: dataset={name!r}")
        try:
            builder = tfds.folder_dataset.ImageFolder(root)
        except Exception as e:
            raise DataError(
                f"{root} is not an image folder laid out as <split>/<class>/<image>: {e}"
            ) from e
        num = _split_examples(builder.info.splits, split)
        check_image_folder(root, split.split("[")[0])
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        label = builder.info.features["label"]
        return ds, DatasetInfo(name, label.num_classes, list(label.names), num, None)

    if name == "fashion_mnist":
        try:
            builder = fashion_mnist.builder(
                data_dir=data_dir, manual_dir=manual_dir or fashion_mnist.DEBIAN_DIR
            )
        except fashion_mnist.FashionMnistFilesError as e:
            raise DataError(str(e)) from e
    else:
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:
            raise DataError(
                f"Unknown tfds dataset. Received: dataset={name!r} ({type(e).__name__})"
            ) from e
        if not builder.is_prepared():
            try:
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
                )
            except Exception as e:
                raise DataError(
                    f"Could not prepare tfds dataset {name!r} (no network, or missing "
                    f"manual files: pass --manual-dir / --data-dir): {e}"
                ) from e
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"{name!r} is not an image-classification dataset (needs 'image' and "
            f"'label' features). Received: features={list(features)}"
        )
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False) if not list(
        builder.info.splits) else None
    num = _split_examples(builder.info.splits, split, ds)
    ds = ds or builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    label = features["label"]
    shape = features["image"].shape
    shape = tuple(shape) if None not in shape else None
    return ds, DatasetInfo(name, label.num_classes, list(label.names), num, shape)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what tfds' ImageFolder reads


def _undecodable(path):
    """`None` if `path` decodes as an image, else the reason."""
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except tf.errors.OpError as e:
        return e.message.split("[Op:")[0].strip() or type(e).__name__
    return None


def check_image_folder(root, split, max_listed=10):
    """Refuses empty class folders (in any split) and images of `split` that do not decode.

    Every image of the split is decoded once before training, so a bad file is
    named here instead of failing a batch mid-epoch.
    """
    empty = []
    for split_name in sorted(os.listdir(root)):
        split_dir = os.path.join(root, split_name)
        if not os.path.isdir(split_dir):
            continue
        for label in sorted(os.listdir(split_dir)):
            folder = os.path.join(split_dir, label)
            if os.path.isdir(folder) and not any(
                    f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(folder)):
                empty.append(os.path.join(split_name, label))
    if empty:
        raise DataError(
            f"Class folders without images ({', '.join(IMAGE_EXTENSIONS)}) in {root}: "
            f"{', '.join(empty)}. Remove them or add images."
        )
    split_dir = os.path.join(root, split)
    paths = sorted(
        os.path.join(d, f) for label in os.listdir(split_dir)
        for d in [os.path.join(split_dir, label)] if os.path.isdir(d)
        for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        reasons = list(pool.map(_undecodable, paths))
    bad = [(p, r) for p, r in zip(paths, reasons) if r]
    if bad:
        listed = "; ".join(f"{os.path.relpath(p, root)} ({r})" for p, r in bad[:max_listed])
        more = f" (+{len(bad) - max_listed} more)" if len(bad) > max_listed else ""
        raise DataError(
            f"{len(bad)} of {len(paths)} images in {split_dir} cannot be decoded: "
            f"{listed}{more}. Remove or replace them."
        )


def normalize(images, mode="torch"):
    """Float images in [0, 255] -> model input (matches `preprocess_input`)."""
    images = tf.cast(images, tf.float32)
    if mode == "torch":
        mean, std = tf.constant(IMAGENET_MEAN), tf.constant(IMAGENET_STD)
        if images.shape[-1] == 1:  # grayscale model input: the mean statistics
            mean, std = tf.reduce_mean(mean, keepdims=True), tf.reduce_mean(std, keepdims=True)
        return (images / 255.0 - mean) / std
    if mode is None or mode == "none":
        return images
    raise ValueError(f"`mode` must be 'torch' or None. Received: mode={mode!r}")


def _to_channels(image, channels):
    have = image.shape[-1]
    if have == channels or have is None:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.cast(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32)), image.dtype)
    raise DataError(f"Cannot map {have}-channel images to {channels} channels.")


def _random_resized_crop(image, size, seed):
    """torchvision's RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3))."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, (size, size), method="bilinear")


def _center_crop(image, size, resize_ratio=256 / 224):
    """Resize the shorter side to `size * 256/224` (bicubic), center crop."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    short = tf.round(size * resize_ratio)
    scale = short / tf.minimum(h, w)
    new = tf.cast(tf.round(tf.stack([h * scale, w * scale])), tf.int32)
    image = tf.image.resize(image, new, method="bicubic")
    return tf.image.resize_with_crop_or_pad(image, size, size)


def augment_fn(style, image_size, channels, training):
    """`(image, seed) -> float image` for the given recipe.

    style: `"imagenet"` (train: random-resized-crop + flip; eval: resize 256
    bicubic + center crop 224, scaled to `image_size`) or `"cifar"` (train:
    pad 4 + random crop + flip; eval: identity or plain resize).
    """

    def fn(image, seed):
        image = _to_channels(image, channels)
        image = tf.cast(image, tf.float32)
        if style == "imagenet":
            if training:
                image = _random_resized_crop(image, image_size, seed)
            else:
                image = _center_crop(image, image_size)
        else:
            if image.shape[0] != image_size or image.shape[1] != image_size:
                image = tf.image.resize(image, (image_size, image_size))
            if training:
                padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
                image = tf.image.stateless_random_crop(
                    padded, (image_size, image_size, channels), seed=seed
                )
        if training:
            image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])
        image = tf.clip_by_value(image, 0.0, 255.0)
        image.set_shape((image_size, image_size, channels))
        return image

    return fn


def make_dataset(
    ds,
    num_examples,
    batch_size,
    image_size,
    channels=3,
    style="cifar",
    training=False,
    seed=0,
    epochs=1,
    initial_epoch=0,
    preprocess="torch",
    cache=True,
    drop_remainder=None,
    mix=None,
    randaugment=False,
    num_classes=None,
):
    """Batches a `(image, label)` dataset for `model.fit` / `evaluate`.

    With `training=True` the result runs epochs `initial_epoch..epochs-1`
    back to back (use `steps_per_epoch=steps_per_epoch(...)` in `fit`); epoch
    `e` is shuffled and augmented from `(seed, e)` alone.

    Args:
        mix: optional `"mixup"` or `"cutmix"` (Keras' own preprocessing
            layers), applied to training batches; labels become one-hot
            (needs `num_classes`).
        randaugment: apply `keras.layers.RandAugment` to training batches
            (not part of the resume guarantee: it draws from its own RNG).
    """
    if cache:
        ds = ds.cache()
    ds = ds.enumerate()
    fn = augment_fn(style, image_size, channels, training)

    def prepare(index, example):
        image, label = example
        return index, image, label

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)

    def finish(images, labels):
        return normalize(images, preprocess), labels

    if not training:
        ds = ds.map(
            lambda i, x, y: (fn(x, tf.stack([0, tf.cast(i, tf.int32)])), y),
            num_parallel_calls=AUTOTUNE,
        )
        ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder))
        return ds.map(finish, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    buffer = min(num_examples, 10_000)

    def one_epoch(epoch):
        epoch_seed = (int(seed) * 100_003 + int(epoch)) % (2**31 - 1)
        e = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        e = e.map(
            lambda i, x, y: (fn(x, tf.stack([epoch_seed, tf.cast(i, tf.int32)])), y),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return e.batch(batch_size, drop_remainder=True if drop_remainder is None else drop_remainder)

    # Python-int seeds per epoch (tf.data rejects tensor shuffle seeds under
    # op determinism); epochs are concatenated in order.
    out = one_epoch(initial_epoch)
    for epoch in range(initial_epoch + 1, epochs):
        out = out.concatenate(one_epoch(epoch))
    if randaugment:
        import keras

        rand = keras.layers.RandAugment(value_range=(0, 255), seed=seed)
        out = out.map(lambda x, y: (rand(x, training=True), y))
    out = out.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    if mix:
        if not num_classes:
            raise ValueError(f"`mix` needs `num_classes`. Received: num_classes={num_classes!r}")
        out = out.map(lambda x, y: (x, tf.one_hot(y, num_classes)))
        out = _mix(out, mix, seed)
    return out.prefetch(AUTOTUNE)


def _mix(ds, mix, seed):
    import keras

    if mix == "mixup":
        layer = keras.layers.MixUp(seed=seed)
    elif mix == "cutmix":
        layer = keras.layers.CutMix(seed=seed)
    else:
        raise ValueError(f"`mix` must be 'mixup', 'cutmix' or None. Received: mix={mix!r}")
    return ds.map(lambda x, y: _apply_mix(layer, x, y))


def _apply_mix(layer, images, labels):
    out = layer({"images": images, "labels": labels})
    return out["images"], out["labels"]


def steps_per_epoch(num_examples, batch_size):
    steps = num_examples // batch_size
    if steps < 1:
        raise DataError(
            f"The training split has {num_examples} examples, fewer than one batch. "
            f"Received: batch_size={batch_size}"
        )
    return steps
