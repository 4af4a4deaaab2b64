"""Classify images with a trained or exported model, as a phone app would.

One loader for the three kinds of file a run or an export leaves: a `.tflite`
model (run with `ai_edge_litert`, quantized inputs handled), a SavedModel
folder written by `keras_cra.export` (its `serving_preprocessed`
signature), and a `.keras` model. Images are preprocessed as evaluation
preprocesses them (`keras_cra.data`), and the labels come from the export's
`labels.txt` or the run's `config.json`.
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np

from keras_cra.files import UsageError


# LiteRT's interpreter aborts the process on thread counts in the hundred thousands; a
# phone has at most a few dozen cores.
MAX_THREADS = 256


@dataclasses.dataclass
class Classifier:
    """A loaded model: `predict(preprocessed float batch) -> probabilities`.

    Exports (TFLite, SavedModel) output probabilities; a `.keras` model that
    outputs logits gets a softmax.
    """

    path: str
    kind: str  # "tflite", "saved_model" or "keras"
    input_shape: tuple  # (H, W, C)
    labels: list
    predict: object


def _lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _labels_near(path, count):
    """Class names from `labels.txt` (export) or `config.json` (run) beside `path`."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for candidate in (folder, os.path.dirname(folder)):
        labels_txt = os.path.join(candidate, "labels.txt")
        if os.path.isfile(labels_txt):
            labels = _lines(labels_txt)
            if len(labels) == count:
                return labels
        config = os.path.join(candidate, "config.json")
        if os.path.isfile(config):
            try:
                with open(config) as f:
                    names = json.load(f).get("class_names") or []
            except (OSError, ValueError):
                names = []
            if len(names) == count:
                return list(names)
    return [f"class_{i}" for i in range(count)]


def _received(flag, value):
    """`Received: --flag value` for a command's flag, `Received: name='value'` for a
    library argument."""
    return f"Received: {flag} {value}" if flag.startswith("--") else f"Received: {flag}={value!r}"


def _read_labels(labels_path, count, flag="labels"):
    try:
        labels = _lines(labels_path)
    except OSError as e:
        raise UsageError(f"{flag} cannot be read ({e.strerror}). "
                         f"{_received(flag, labels_path)}") from e
    if len(labels) != count:
        raise UsageError(f"{flag} has {len(labels)} names but the model predicts {count} "
                         f"classes. {_received(flag, labels_path)}")
    return labels


def load_classifier(path, labels=None, num_threads=None, flags=("path", "labels")):
    """Loads a `.tflite` file, an exported SavedModel folder or a `.keras` file.

    Args:
        path: the model.
        labels: optional path of a file with one class name per line
            (default: the export's `labels.txt` or the run's `config.json`
            beside the model, else `class_<i>`).
        num_threads: TFLite interpreter threads (default: all).
        flags: the names errors give `path` and `labels` (a command passes its
            flags, e.g. `("--model", "--labels")`).
    """
    flag, labels_flag = flags
    path = os.fspath(path)
    from keras_cra.applications import weights as weights_lib

    entry = weights_lib.packaged_entry(path) if not os.path.exists(path) else None
    if entry is not None:  # weights that ship with the package, by name
        from keras_cra.applications import zoo

        model = zoo.get_model(entry.model_name, weights=entry.name)
        names = (_read_labels(labels, entry.classes, labels_flag) if labels
                 else list(entry.class_names))
        return Classifier(path, "keras", tuple(model.input_shape[1:]), names,
                          lambda x: np.asarray(model.predict_on_batch(x), dtype="float64"))
    if not os.path.exists(path):
        raise UsageError(f"{flag} does not exist (nor is it the name of weights that ship "
                         f"with keras_cra: {weights_lib.packaged_names()}). "
                         f"{_received(flag, path)}")
    if path.endswith(".tflite") and os.path.isfile(path):
        from keras_cra.export import safety, tflite

        safety.check_export_hashes(os.path.dirname(os.path.abspath(path)), flag,
                                   only=(path,))
        try:
            interp = tflite.interpreter(path, num_threads=num_threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UsageError(f"{flag} is not a readable TFLite model ({e}). "
                             f"{_received(flag, path)}") from e
        shape = tuple(int(d) for d in interp.get_input_details()[0]["shape"][1:])
        count = int(interp.get_output_details()[0]["shape"][-1])
        kind = "tflite"

        def predict(x):
            return tflite.run(None, x, interp=interp)
    elif os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        from keras_cra.training.evaluate import load_predictor

        predict, shape, count = load_predictor(path, flag)
        kind = "saved_model"
    elif path.endswith(".keras") and os.path.isfile(path):
        from keras_cra.files import load_keras_model

        from keras_cra.export.serving import outputs_probabilities

        model = load_keras_model(path, flag)
        shape = tuple(model.input_shape[1:])
        count = int(model.output_shape[-1])
        kind = "keras"
        logits = not outputs_probabilities(model)

        def predict(x):
            y = np.asarray(model.predict_on_batch(x), dtype="float64")
            if logits:
                y = np.exp(y - y.max(-1, keepdims=True))
                y /= y.sum(-1, keepdims=True)
            return y
    else:
        raise UsageError(f"{flag} must be a .tflite file, an exported SavedModel folder or a "
                         f".keras file. {_received(flag, path)}")
    if any(d is None for d in shape):
        raise UsageError(f"{flag} has no fixed input size ({shape}); export it with one. "
                         f"{_received(flag, path)}")
    names = _read_labels(labels, count, labels_flag) if labels else _labels_near(path, count)
    return Classifier(path, kind, tuple(shape), names, predict)


def image_paths(image_or_folder):
    """The image files to classify: one file, or every image of a folder (sorted; hidden
    files such as `._photo.jpg` are not images and are left out)."""
    from keras_cra.data.pipeline import IMAGE_EXTENSIONS

    if os.path.isdir(image_or_folder):
        paths = sorted(os.path.join(image_or_folder, f) for f in os.listdir(image_or_folder)
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not paths:
            raise UsageError(f"The folder holds no {'/'.join(IMAGE_EXTENSIONS)} images. "
                             f"Received: {image_or_folder}")
        return paths
    if not os.path.isfile(image_or_folder):
        raise UsageError(f"The image does not exist. Received: {image_or_folder}")
    return [image_or_folder]


# What one image may decode and resize to, checked from its header before decoding.
MAX_PIXELS = 64_000_000


def check_image_header(path, input_shape):
    """Reads an image's size from its header (nothing decoded) and refuses one whose
    decoded or resized size exceeds `MAX_PIXELS`."""
    from PIL import Image, UnidentifiedImageError

    from keras_cra.applications import zoo

    try:
        with Image.open(path) as image:
            w, h = image.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read as an image ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:120]}).") from e
    if w < 1 or h < 1:
        raise UsageError(f"{path} has no pixels ({w}x{h}).")
    size = input_shape[0]
    resized = (round(size * 256 / 224) ** 2 * max(w, h) / min(w, h)
               if zoo.style_for_input(size) == "imagenet" else 0)
    if w * h > MAX_PIXELS or resized > MAX_PIXELS:
        raise UsageError(f"{path} is {w}x{h} pixels; decoding and resizing it would need more "
                         f"than {MAX_PIXELS:,} pixels. Crop or shrink it first.")


def preprocess(path, input_shape):
    """Decodes an image and preprocesses it as evaluation does, for `input_shape`."""
    import tensorflow as tf

    from keras_cra.applications import zoo
    from keras_cra.data.pipeline import augment_fn, normalize

    check_image_header(path, input_shape)
    size, channels = input_shape[0], input_shape[-1]
    try:
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False,
                                   channels=channels if channels in (1, 3) else 0)
    except tf.errors.OpError as e:
        raise UsageError(f"{path} cannot be decoded as an image ({e.message}).") from e
    image = augment_fn(zoo.style_for_input(size), size, channels, training=False)(image, None)
    return normalize(image[None], "torch").numpy().astype("float32")


def classify(classifier, paths, top=5):
    """Top-`top` labels and probabilities, and the latency of each image (batch 1).

    An image that cannot be read gives `{"image", "error"}` and the others go on.

    Returns:
        A list of `{"image", "top": [(label, probability)], "latency_ms"}` or
        `{"image", "error"}`.
    """
    results, warm = [], False
    for path in paths:
        try:
            x = preprocess(path, classifier.input_shape)
        except UsageError as e:
            results.append({"image": path, "error": str(e)})
            continue
        if not warm:
            classifier.predict(x)  # warm up
            warm = True
        start = time.perf_counter()
        probs = classifier.predict(x)[0]
        latency = (time.perf_counter() - start) * 1000
        best = np.argsort(-probs)[:top]
        results.append({"image": path, "latency_ms": latency,
                        "top": [(classifier.labels[i], float(probs[i])) for i in best]})
    return results


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        description="Classify images with a trained or exported model and print the top "
                    "labels and the latency per image.")
    p.add_argument("images", help="an image file, or a folder of .jpg/.jpeg/.png images")
    p.add_argument("--model", required=True,
                   help="a .tflite file, an exported SavedModel folder, a .keras file, or the "
                        "name of weights that ship with keras_cra (fashion_mnist)")
    p.add_argument("--labels", default=None,
                   help="class names, one per line (default: labels.txt or config.json "
                        "beside the model)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="TFLite threads (default: all)")
    return p


def main(argv=None):
    from keras_cra.cli import run

    a = build_parser().parse_args(argv)

    def command():
        if a.top < 1:
            raise UsageError(f"--top must be >= 1. Received: --top {a.top}")
        if a.threads is not None and not 1 <= a.threads <= MAX_THREADS:
            raise UsageError(f"--threads must be between 1 and {MAX_THREADS}. "
                             f"Received: --threads {a.threads}")
        paths = image_paths(a.images)
        classifier = load_classifier(a.model, a.labels, a.threads, flags=("--model", "--labels"))
        results = classify(classifier, paths, a.top)
        failed = [r for r in results if "error" in r]
        if len(failed) == len(results):
            raise UsageError(failed[0]["error"] if len(failed) == 1 else
                             f"None of the {len(failed)} images could be read; the first: "
                             f"{failed[0]['error']}")
        for result in results:
            if "error" in result:
                print(f"skipped: {result['error']}", file=sys.stderr)
                continue
            print(f"{result['image']}  ({result['latency_ms']:.2f} ms, {classifier.kind})")
            for label, p in result["top"]:
                print(f"  {p:7.2%}  {label}")
        if failed:
            print(f"{len(failed)} of {len(results)} images could not be read (named above).",
                  file=sys.stderr)

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
