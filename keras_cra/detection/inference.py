"""Draw an exported detector's boxes on an image (`applications/detect.py`)."""

import argparse
import json
import os

import numpy as np

from keras_cra.files import UsageError


def load_detector(folder):
    """`(detect(uint8 image (S, S, 3)) -> (boxes, classes, scores), image_size, class names)`
    for an export folder of `keras_cra.detection.export` (its SavedModel, or its `.tflite`
    plus NumPy NMS when the folder has no SavedModel)."""
    from keras_cra.detection import export
    from keras_cra.export import safety

    meta = read_metadata(folder)
    size, names = meta["image_size"], meta["class_names"]
    saved = os.path.join(folder, export.SAVED_MODEL)
    if os.path.isdir(saved):
        import tensorflow as tf

        serve = safety.load_saved_model(saved, "--model").signatures["serving_default"]

        def detect(image):
            y = serve(images=tf.constant(image[None]))
            n = int(y["num_detections"][0])
            return (y["boxes"][0, :n].numpy(), y["classes"][0, :n].numpy(),
                    y["scores"][0, :n].numpy())
    else:
        from keras_cra.export import tflite

        path = os.path.join(folder, export.TFLITE)
        safety.check_export_hashes(folder, "--model", only=(path,))
        interp = tflite.interpreter(path)

        def detect(image):
            return export.nms(*export.run_tflite(interp, image))
    return detect, size, names


def read_metadata(folder):
    """The `metadata.json` of a detector export folder, with one error if it is not one."""
    meta_path = os.path.join(folder, "metadata.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if not isinstance(meta["image_size"], int) or not isinstance(meta["class_names"], list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError("--model must be a detector export folder (with metadata.json). "
                         f"Received: --model {folder}") from e
    return meta


def letterbox(path, size):
    """An image file as uint8 `(size, size, 3)` (longer side scaled to `size`, padded at
    the bottom and right, as in training) and its scale."""
    import tensorflow as tf

    if not os.path.isfile(path):
        raise UsageError(f"The image does not exist. Received: {path}")
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
        raise UsageError(f"{path} cannot be decoded as an image ({e.message}).") from e
    h, w = int(image.shape[0]), int(image.shape[1])
    scale = size / max(h, w)
    resized = tf.image.resize(image, (round(h * scale), round(w * scale)))
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, size, size)
    return np.clip(np.round(padded.numpy()), 0, 255).astype("uint8"), scale


def draw_boxes(ax, boxes, labels, names=None, scores=None, min_score=0.0, color="red",
               linewidth=1.5, fontsize=8):
    """Draws `xyxy` boxes on a matplotlib axis; with `scores`, only those >= `min_score`,
    captioned "class score". Labels < 0 (padding) are skipped."""
    from matplotlib.patches import Rectangle

    scores = [None] * len(labels) if scores is None else scores
    for box, label, score in zip(boxes, labels, scores):
        if label < 0 or (score is not None and score < min_score):
            continue
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                               edgecolor=color, linewidth=linewidth))
        if score is not None:
            ax.text(box[0], box[1], f"{names[int(label)]} {score:.2f}", color=color,
                    fontsize=fontsize, va="bottom")


def draw(image, boxes, classes, scores, names, path, min_score):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.imshow(image)
    ax.axis("off")
    draw_boxes(ax, boxes, classes, names, scores, min_score)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
    fig.savefig(path, dpi=100)


def main(argv=None):
    from keras_cra.cli import run

    p = argparse.ArgumentParser(description="Draw an exported detector's boxes on an image.")
    p.add_argument("image")
    p.add_argument("--model", required=True, help="a folder written by training/detect.py --export")
    p.add_argument("--out", default=None, help="output PNG (default: IMAGE.detections.png)")
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (never the input image)")
    a = p.parse_args(argv)

    def command():
        from keras_cra.files import atomic_output, check_output_file

        if not 0 <= a.min_score <= 1:
            raise UsageError(f"--min-score must be in [0, 1]. Received: --min-score {a.min_score}")
        read_metadata(a.model)
        out = a.out or os.path.splitext(a.image)[0] + ".detections.png"
        if os.path.abspath(out) == os.path.abspath(a.image) or (
                os.path.exists(out) and os.path.exists(a.image)
                and os.path.samefile(out, a.image)):
            raise UsageError(f"--out is the input image; choose another file. Nothing was "
                             f"written. Received: --out {out}")
        if not out.lower().endswith(".png"):
            raise UsageError(f"--out must be a .png path. Received: --out {out}")
        check_output_file(out, "--out", a.overwrite)
        detect, size, names = load_detector(a.model)
        image, _ = letterbox(a.image, size)
        boxes, classes, scores = detect(image)
        with atomic_output(out, "--out", a.overwrite) as tmp:
            draw(image, boxes, classes, scores, names, tmp, a.min_score)
        shown = [(names[int(c)], round(float(s), 3)) for c, s in zip(classes, scores)
                 if s >= a.min_score]
        print(f"{len(shown)} detection(s) with score >= {a.min_score}: {shown}")
        print(f"Wrote {out}")

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
