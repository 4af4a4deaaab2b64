"""Fashion-MNIST scenes: an offline detection dataset made of real images.

Each scene is a black `size x size` canvas holding 1 to `max_items`
Fashion-MNIST items, each scaled by 1, 1.25 or 1.5 and placed where it
overlaps earlier items by little (IoU <= 0.1), with its tight box (pixels
above `INK`) and its class. Scenes are a pure function of
`(split, index, size, max_items, seed)`: train scenes use only train items,
test scenes only test items.
"""

import numpy as np

from keras_cra.detection import boxes as boxes_lib
from keras_cra.errors import ArgumentError

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
INK = 40  # a pixel above this is part of the item (0-255)
SCALES = (1.0, 1.25, 1.5)


def _items(split, manual_dir):
    from keras_cra.data import fashion_mnist

    files = fashion_mnist.verify_files(manual_dir, check_sha256=False)
    prefix = {"train": "train", "test": "test"}[split]
    images = np.frombuffer(files[f"{prefix}_data"], np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(files[f"{prefix}_labels"], np.uint8, offset=8).astype("int32")
    return images, labels


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _resize_nearest(item, scale):
    n = int(round(28 * scale))
    idx = np.minimum((np.arange(n) / scale).astype(int), 27)
    return item[idx][:, idx]


def make_scenes(split="train", count=1000, size=96, max_items=4, seed=0,
                manual_dir=None):
    """Makes `count` scenes of one split.

    Args:
        split: `"train"` or `"test"`: which Fashion-MNIST items to use.
        count: number of scenes.
        size: canvas side in pixels (>= 48).
        max_items: most items per scene (1 to 8).
        seed: int; with `split`, fixes every scene.
        manual_dir: folder of the Fashion-MNIST IDX files (Debian's by
            default).

    Returns:
        A dict: `images` `(count, size, size, 3)` uint8, `boxes`
        `(count, max_items, 4)` float32 `xyxy` pixels and `labels`
        `(count, max_items)` int32, both padded with -1, and `class_names`.
    """
    from keras_cra.data import fashion_mnist

    if split not in ("train", "test"):
        raise ArgumentError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    for name, value, low in (("count", count, 1), ("size", size, 48), ("max_items", max_items, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ArgumentError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
    if max_items > 8:
        raise ArgumentError(f"`max_items` must be <= 8. Received: max_items={max_items}")
    items, item_labels = _items(split, manual_dir or fashion_mnist.DEBIAN_DIR)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images = np.zeros((count, size, size), np.uint8)
    all_boxes = -np.ones((count, max_items, 4), "float32")
    all_labels = -np.ones((count, max_items), "int32")
    for n in range(count):
        placed = []
        for _ in range(int(rng.integers(1, max_items + 1))):
            k = int(rng.integers(len(items)))
            item = _resize_nearest(items[k], SCALES[int(rng.integers(len(SCALES)))])
            ys, xs = np.nonzero(item > INK)
            if len(ys) == 0:
                continue
            side = item.shape[0]
            for _attempt in range(20):
                top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                box = (left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1)
                if all(_iou(box, other) <= 0.1 for other, _ in placed):
                    window = images[n, top:top + side, left:left + side]
                    np.maximum(window, item, out=window)
                    placed.append((box, int(item_labels[k])))
                    break
        b, lab = boxes_lib.pad(np.array([p[0] for p in placed], "float32").reshape(-1, 4),
                               np.array([p[1] for p in placed], "int32"), max_items)
        all_boxes[n], all_labels[n] = b, lab
    return {"images": np.repeat(images[..., None], 3, axis=-1), "boxes": all_boxes,
            "labels": all_labels, "class_names": list(CLASS_NAMES)}
