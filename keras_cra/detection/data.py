"""Detection inputs: Fashion-MNIST scenes (offline) and tfds `coco/2017` / `voc/2007`.

Every example becomes `{"images": uint8 (S, S, 3), "boxes": (max_boxes, 4)
xyxy pixels, "labels": (max_boxes,) int32, "crowd": (max_boxes,) bool}`,
padded with -1 labels, after the rules of `keras_cra.detection.boxes.clean`
(clip, drop zero-area boxes, keep images without boxes as negatives).
Images of other sizes are letterboxed: scaled so the longer side is `S`,
padded at the bottom and right.
"""

import numpy as np

from keras_cra.errors import UserError

SCENES = "fashion_mnist_scenes"


class DetectionDataError(UserError):
    """A dataset that cannot be read as detection data."""


def load(dataset, split, image_size, max_boxes=100, count=None, data_dir=None,
         manual_dir=None, seed=0):
    """`(tf.data.Dataset of examples, class_names, num_examples)`.

    Args:
        dataset: `"fashion_mnist_scenes"` or a tfds name whose features hold
            `objects/bbox` and `objects/label` (e.g. `"coco/2017"`,
            `"voc/2007"`).
        split: `"train"` / `"test"` for the scenes; a tfds split otherwise.
        image_size: side of the square model input.
        max_boxes: boxes kept per image (padding or truncation).
        count: for the scenes, how many to make (default 2000 train, 500
            test).
    """
    import tensorflow as tf

    if dataset == SCENES:
        from keras_cra.detection import scenes

        if split not in ("train", "test"):
            raise DetectionDataError(
                f"{SCENES} has the splits 'train' and 'test'. Received: split={split!r}")
        count = count or (2000 if split == "train" else 500)
        made = scenes.make_scenes(split, count, size=image_size,
                                  max_items=min(4, max_boxes), seed=seed, manual_dir=manual_dir)
        n = made["boxes"].shape[1]
        boxes = -np.ones((count, max_boxes, 4), "float32")
        labels = -np.ones((count, max_boxes), "int32")
        boxes[:, :n], labels[:, :n] = made["boxes"], made["labels"]
        ds = tf.data.Dataset.from_tensor_slices({
            "images": made["images"], "boxes": boxes, "labels": labels,
            "crowd": np.zeros((count, max_boxes), bool)})
        return ds, made["class_names"], count
    return _load_tfds(dataset, split, image_size, max_boxes, data_dir, manual_dir)


def _load_tfds(dataset, split, image_size, max_boxes, data_dir, manual_dir):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for unknown names
        raise DetectionDataError(f"Unknown tfds dataset: {e}. Received: --dataset {dataset}") from e
    features = builder.info.features
    objects = features["objects"] if "objects" in features.keys() else None
    if objects is None or "bbox" not in objects.keys() or "label" not in objects.keys():
        raise DetectionDataError(
            f"{dataset} has no boxes (no objects/bbox and objects/label features); use a "
            f"detection dataset such as coco/2017 or voc/2007. Received: --dataset {dataset}")
    has_crowd = "is_crowd" in objects.keys()
    class_names = list(objects["label"].names)
    if not builder.is_prepared():
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    ds = builder.as_dataset(split=split, shuffle_files=False)
    try:
        num_examples = builder.info.splits[split].num_examples
    except KeyError:  # split arithmetic such as "train[:100]", or a mocked builder
        num_examples = int(ds.cardinality())
        if num_examples < 0:
            num_examples = sum(1 for _ in ds)

    def convert(example):
        image = example["image"]
        h = tf.cast(tf.shape(image)[0], tf.float32)
        w = tf.cast(tf.shape(image)[1], tf.float32)
        scale = image_size / tf.maximum(h, w)
        new_h = tf.cast(tf.round(h * scale), tf.int32)
        new_w = tf.cast(tf.round(w * scale), tf.int32)
        image = tf.image.resize(image, (new_h, new_w))
        image = tf.image.pad_to_bounding_box(image, 0, 0, image_size, image_size)
        rel = example["objects"]["bbox"]  # tfds: relative yxyx
        lengths = [tf.shape(example["objects"][k])[0]
                   for k in ("bbox", "label") + (("is_crowd",) if has_crowd else ())]
        checks = [tf.debugging.assert_equal(
            n, lengths[0], message=f"{dataset}: an example's objects/bbox, objects/label"
            + (" and objects/is_crowd" if has_crowd else "") + " have different lengths")
            for n in lengths[1:]]
        with tf.control_dependencies(checks):
            rel = tf.identity(rel)
        boxes = tf.stack([rel[:, 1] * w, rel[:, 0] * h, rel[:, 3] * w, rel[:, 2] * h], -1) * scale
        labels = tf.cast(example["objects"]["label"], tf.int32)
        crowd = (tf.cast(example["objects"]["is_crowd"], tf.bool) if has_crowd
                 else tf.zeros_like(labels, tf.bool))
        boxes, labels, crowd = clean_tf(boxes, labels, crowd, image_size)
        n = tf.minimum(tf.shape(labels)[0], max_boxes)
        pad = max_boxes - n
        return {
            "images": tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
            "boxes": tf.pad(boxes[:n], [[0, pad], [0, 0]], constant_values=-1.0),
            "labels": tf.pad(labels[:n], [[0, pad]], constant_values=-1),
            "crowd": tf.pad(crowd[:n], [[0, pad]], constant_values=False),
        }

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE), class_names, num_examples


def _clip_and_keep(boxes, labels, image_size):
    """Boxes clipped to the image, and which of them stay: non-zero area and a label."""
    import tensorflow as tf

    boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, float(image_size))
    keep = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]) & (labels >= 0)
    return boxes, keep


def clean_tf(boxes, labels, crowd, image_size):
    """`boxes.clean` in TF ops, on one image (crowd boxes kept, flagged, for evaluation)."""
    import tensorflow as tf

    boxes, keep = _clip_and_keep(boxes, labels, image_size)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep), tf.boolean_mask(crowd, keep)


def pipeline(ds, batch_size, image_size, training, seed=0, epochs=1):
    """Batches `(normalized images, {"boxes", "labels"})` for `fit` / `predict`.

    Training: shuffled per epoch (seeded), horizontal flip and scale jitter
    (Keras' box-aware RandomFlip and RandomZoom), then boxes clipped, and
    zero-area and crowd boxes set to label -1 (ignored by the loss).
    """
    import keras
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize

    if training:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat(epochs)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training:
        flip = keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=seed)
        zoom = keras.layers.RandomZoom((-0.25, 0.25), bounding_box_format="xyxy",
                                       fill_mode="constant", seed=seed + 1)

        def augment(batch):
            out = zoom(flip({"images": tf.cast(batch["images"], tf.float32),
                             "bounding_boxes": {"boxes": batch["boxes"],
                                                "labels": batch["labels"]}}))
            return dict(batch, images=out["images"], boxes=out["bounding_boxes"]["boxes"])

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)

    def targets(batch):
        labels = tf.cast(batch["labels"], tf.int32)
        boxes, keep = _clip_and_keep(batch["boxes"], labels, image_size)
        keep &= ~batch["crowd"]
        labels = tf.where(keep, labels, -1)
        boxes = tf.where(keep[..., None], boxes, -1.0)
        return normalize(batch["images"]), {"boxes": boxes, "labels": labels}

    return ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
