"""ImageNet class index and prediction decoding."""

import json

import keras
import numpy as np

# ImageNet mean and std of RGB pixels scaled to [0, 1] ("torch" preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CLASS_INDEX_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/"
    "data/imagenet_class_index.json"
)
CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


def load_class_index(class_index_path=None):
    """`{index: (wordnet_id, name)}` from a local file or the Keras cache."""
    if class_index_path is None:
        class_index_path = keras.utils.get_file(
            "imagenet_class_index.json",
            CLASS_INDEX_URL,
            cache_subdir="models",
            file_hash=CLASS_INDEX_MD5,
        )
    with open(class_index_path) as f:
        index = json.load(f)
    return {int(k): tuple(v) for k, v in index.items()}


def decode_predictions(preds, top=5, class_index_path=None):
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions of shape "
            f"(samples, 1000). Received: preds.shape={preds.shape}"
        )
    index = load_class_index(class_index_path)
    results = []
    for row in preds:
        best = row.argsort()[-top:][::-1]
        results.append([(*index[int(i)], float(row[i])) for i in best])
    return results
