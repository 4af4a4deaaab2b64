"""tf.data input pipelines for image classification.

Every random choice (shuffle order, crops, flips) is a stateless function of
`(seed, epoch, example index)`, so epoch `e` sees exactly the same batches
whether a run goes straight through or is resumed at epoch `e`.
"""

import dataclasses
import errno
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_cra.applications.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401
from keras_cra.data import fashion_mnist
from keras_cra.errors import ArgumentError, UserError

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_DATASET = "fashion_mnist"


class DataError(UserError):
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


def _check_not_empty(name, split, num):
    if num < 1:
        raise DataError(f"The split {split!r} of {name} holds no examples. "
                        f"Received: split={split!r}")


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
        ds, num = _folder_split(builder, split)
        for part in split.split("+"):
            check_image_folder(root, part.split("[")[0].strip())
        _check_not_empty(name, split, num)
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
    _check_not_empty(name, split, num)
    ds = ds or builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    label = features["label"]
    shape = features["image"].shape
    shape = tuple(shape) if None not in shape else None
    return ds, DatasetInfo(name, label.num_classes, list(label.names), num, shape)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what tfds' ImageFolder reads
# Image files that ImageFolder would pass over: named in an error, never skipped silently.
OTHER_IMAGE_EXTENSIONS = (".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".heic")


def _undecodable(path):
    """`None` if `path` decodes as one still image (as the pipeline decodes it), else why."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        return "a broken symbolic link" if os.path.islink(path) else f"cannot be read: {e.strerror}"
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF image under a .jpg/.png name; the dataset reader decodes GIFs as frames"
    if head[:2] == b"BM" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "a BMP or WebP image under a .jpg/.png name; convert it to PNG or JPEG"
    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=True)
    except tf.errors.OpError as e:
        return e.message.split("[Op:")[0].strip() or type(e).__name__
    if image.shape.rank != 3:
        return f"an animation ({image.shape[0]} frames), not one image"
    return None


def _visible(folder):
    """The entries of `folder` except hidden ones (`.DS_Store`, `._name`)."""
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


def check_image_folder(root, split, max_listed=10):
    """Checks an image folder before training, so a bad file is named here instead of
    failing a batch mid-epoch or being skipped without a word.

    Refuses: empty class folders (in any split), a split with fewer than two classes,
    image files of types the reader does not take (BMP, GIF, WebP, ... by name), and
    images of `split` that do not decode as the pipeline decodes them (truncated, not an
    image, a GIF or an animation under a .png name, a broken link, a symlink loop).
    """
    empty, other = [], []
    for split_name in _visible(root):
        split_dir = os.path.join(root, split_name)
        if not os.path.isdir(split_dir):
            continue
        for label in _visible(split_dir):
            folder = os.path.join(split_dir, label)
            if not os.path.isdir(folder):
                continue
            names = _visible(folder)
            other += [os.path.join(split_name, label, f) for f in names
                      if f.lower().endswith(OTHER_IMAGE_EXTENSIONS)]
            if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in names):
                empty.append(os.path.join(split_name, label))
    if other:
        raise DataError(
            f"{len(other)} image files in {root} are of a type the folder reader does not "
            f"take ({', '.join(IMAGE_EXTENSIONS)} only): {', '.join(other[:max_listed])}"
            + (f" (+{len(other) - max_listed} more)" if len(other) > max_listed else "")
            + ". Convert them to PNG or JPEG, or remove them.")
    if empty:
        raise DataError(
            f"Class folders without images ({', '.join(IMAGE_EXTENSIONS)}) in {root}: "
            f"{', '.join(empty)}. Remove them or add images."
        )
    split_dir = os.path.join(root, split)
    classes = [c for c in _visible(split_dir) if os.path.isdir(os.path.join(split_dir, c))]
    if len(classes) < 2:
        raise DataError(f"{split_dir} has {len(classes)} class folder(s); a classifier needs "
                        f"at least two. Received: split={split!r}")
    paths = sorted(
        os.path.join(d, f) for label in classes
        for d in [os.path.join(split_dir, label)]
        for f in _visible(d) if f.lower().endswith(IMAGE_EXTENSIONS)
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


def _folder_split(builder, split):
    """`(dataset, examples)` of a split of an ImageFolder, tfds slicing (`"test[:16]"`,
    `"train[10%:]"`) done here: ImageFolder reads whole splits only."""
    try:
        absolute = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
        splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    except (ValueError, KeyError, AssertionError) as e:
        raise DataError(f"Unknown split or slice. Available splits: {sorted(builder.info.splits)}. "
                        f"Received: split={split!r}") from e
    parts = []
    for part in absolute:
        n = splits[part.splitname]
        start, stop = part.from_ or 0, n if part.to is None else part.to
        ds = builder.as_dataset(split=part.splitname, as_supervised=True, shuffle_files=False)
        parts.append((ds.skip(start).take(max(stop - start, 0)), max(stop - start, 0)))
    ds = parts[0][0]
    for more, _ in parts[1:]:
        ds = ds.concatenate(more)
    return ds, sum(n for _, n in parts)


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
    raise ArgumentError(f"`mode` must be 'torch' or None. Received: mode={mode!r}")


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


def _seeded_shuffle(ds, buffer, seed, seed2):
    """`ds.shuffle(buffer, seed=seed2, reshuffle_each_iteration=False)` as it runs when the
    global seed is `seed` (the run's: `configure_determinism`), for a tensor `seed2`.

    `Dataset.shuffle` cannot take a tensor seed when the global seed is 0 (its Python
    check of the seed pair reads the tensor as a bool), so the same op is made here
    with the same seed pair, through public APIs.
    """
    seed2 = tf.where(tf.logical_and(tf.equal(seed, 0), tf.equal(seed2, 0)),
                     tf.constant(2**31 - 1, tf.int64), seed2)
    spec = ds.element_spec
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer, tf.int64), seed=tf.constant(seed, tf.int64),
        seed2=seed2, seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[t.dtype for t in tf.nest.flatten(spec)],
        output_shapes=[t.shape for t in tf.nest.flatten(spec)],
        reshuffle_each_iteration=False)
    return tf.data.experimental.from_variant(variant, spec)


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

    @tf.autograph.experimental.do_not_convert  # plain graph code: the seed is a tensor
    def one_epoch(epoch):
        epoch_seed = (tf.constant(int(seed), tf.int64) * 100_003 + epoch) % (2**31 - 1)
        e = _seeded_shuffle(ds, buffer, int(seed) % (2**31 - 1), epoch_seed)
        e = e.map(
            lambda i, x, y: (fn(x, tf.stack([tf.cast(epoch_seed, tf.int32),
                                             tf.cast(i, tf.int32)])), y),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return e.batch(batch_size, drop_remainder=True if drop_remainder is None else drop_remainder)

    # One pipeline whatever the epoch count: epoch e is built when it is reached (the same
    # order as a Python-int shuffle seed per epoch, concatenated).
    out = tf.data.Dataset.range(int(initial_epoch), int(epochs)).flat_map(one_epoch)
    if randaugment:
        import keras

        rand = keras.layers.RandAugment(value_range=(0, 255), seed=seed)
        out = out.map(lambda x, y: (rand(x, training=True), y))
    out = out.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    if mix:
        if not num_classes:
            raise ArgumentError(f"`mix` needs `num_classes`. Received: num_classes={num_classes!r}")
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
        raise ArgumentError(f"`mix` must be 'mixup', 'cutmix' or None. Received: mix={mix!r}")
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
