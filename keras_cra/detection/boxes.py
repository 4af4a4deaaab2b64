"""Box formats and the cleaning rules every detection input goes through."""

import numpy as np

from keras_cra.errors import ArgumentError

# Formats a dataset may give its boxes in; everything is converted to `xyxy`
# pixels (x_min, y_min, x_max, y_max).
BOX_FORMATS = ("xyxy", "yxyx", "xywh", "rel_xyxy", "rel_yxyx")


def to_xyxy(boxes, box_format, height, width):
    """`(N, 4)` boxes in `box_format` -> `xyxy` pixels (float32)."""
    if box_format not in BOX_FORMATS:
        raise ArgumentError(
            f"`box_format` must be one of {BOX_FORMATS}. Received: box_format={box_format!r}"
        )
    b = np.asarray(boxes, dtype="float32").reshape(-1, 4)
    if box_format in ("yxyx", "rel_yxyx"):
        b = b[:, [1, 0, 3, 2]]
    elif box_format == "xywh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    if box_format.startswith("rel_"):
        b = b * np.array([width, height, width, height], "float32")
    return b


def clean(boxes, labels, height, width, crowd=None):
    """Applies the documented rules to one image's `xyxy` pixel boxes.

    - boxes are clipped to the image;
    - boxes with zero area after clipping are dropped;
    - crowd boxes (`crowd` true) are dropped from the training targets, as
      COCO's own evaluation ignores them;
    - an image left without boxes is kept, as a negative.

    Returns:
        `(boxes (M, 4) float32, labels (M,) int32)`.
    """
    b = np.asarray(boxes, dtype="float32").reshape(-1, 4).copy()
    labels = np.asarray(labels, dtype="int32").reshape(-1)
    if len(b) != len(labels):
        raise ArgumentError(
            f"Every box needs one label. Received: {len(b)} boxes and {len(labels)} labels"
        )
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if crowd is not None:
        keep &= ~np.asarray(crowd, dtype=bool).reshape(-1)
    return b[keep], labels[keep]


def pad(boxes, labels, max_boxes):
    """Pads (or truncates) to `max_boxes` rows: boxes -1, labels -1 (ignored)."""
    out_b = -np.ones((max_boxes, 4), "float32")
    out_l = -np.ones((max_boxes,), "int32")
    n = min(len(boxes), max_boxes)
    out_b[:n], out_l[:n] = boxes[:n], labels[:n]
    return out_b, out_l
