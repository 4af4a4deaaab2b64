"""Verification of export artifacts against Keras: the data, the checks, the timing."""

import os
import time

import numpy as np

from keras_cra.export.formats import FORMATS


def validation_data(model, dataset, split, data_dir, examples):
    """Preprocessed images, labels and class names from a dataset split."""
    from keras_cra import data
    from keras_cra.applications import zoo

    shape = tuple(model.input_shape[1:])
    ds, info = data.load(dataset, f"{split}[:{examples}]", data_dir)
    batches = data.make_dataset(ds, info.num_examples, 256, shape[0], shape[-1],
                                style=zoo.style_for_input(shape[0]))
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    return np.concatenate(xs), np.concatenate(ys), info.class_names


def calibration_data(model, dataset, data_dir, batches, batch_size=32):
    """Representative batches drawn from the training split (eval preprocessing)."""
    from keras_cra import data
    from keras_cra.applications import zoo

    shape = tuple(model.input_shape[1:])
    ds, info = data.load(dataset, f"train[:{batches * batch_size}]", data_dir)
    return [x.numpy() for x, _ in data.make_dataset(ds, info.num_examples, batch_size, shape[0],
                                                     shape[-1],
                                                     style=zoo.style_for_input(shape[0]))]


def natural_photos(size):
    """scikit-image sample photos, resized to `size` (uint8 RGB)."""
    import tensorflow as tf
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    return np.stack([
        tf.image.resize(p, (size, size), method="bicubic", antialias=True).numpy()
        .clip(0, 255).astype(np.uint8) for p in photos
    ])


def median_latency_ms(fn, repeats=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def _latency_key(threads):
    return "latency_ms_1_thread" if threads == 1 else "latency_ms_all_threads"


def verify(artifacts, keras_fn, x, y, keras_probs, latency_repeats=20):
    """Compares every artifact with Keras on `x` (and labels `y`), and times batch 1.

    Args:
        artifacts: `{format name: path}`.
        keras_fn: the Keras model's probabilities from preprocessed images.
        keras_probs: `keras_fn` on `x`.
    """
    rows = {}
    keras_top1 = keras_probs.argmax(-1)
    single = x[:1]
    keras_row = {"size_mb": None, "max_abs_diff": 0.0, "top1_agreement": 1.0,
                 "latency_ms_all_threads": median_latency_ms(lambda: keras_fn(single),
                                                             latency_repeats)}
    if y is not None:
        keras_row["accuracy"] = float(np.mean(keras_top1 == y))
    rows["keras"] = keras_row
    cpus = os.cpu_count() or 1
    for name, path in artifacts.items():
        fmt = FORMATS[name]
        probs = fmt.runner(path)(x)
        row = {
            "size_mb": fmt.size_mb(path),
            "max_abs_diff": float(np.abs(probs - keras_probs).max()),
            "top1_agreement": float(np.mean(probs.argmax(-1) == keras_top1)),
        }
        if y is not None:
            row["accuracy"] = float(np.mean(probs.argmax(-1) == y))
        for threads in fmt.thread_counts:
            run = fmt.runner(path, num_threads=threads or cpus)
            run(single)
            row[_latency_key(threads)] = median_latency_ms(lambda: run(single), latency_repeats)
        rows[name] = row
    return {"examples": int(len(x)), "artifacts": rows}


def verify_photos(artifacts, model, from_uint8):
    """Top-1 agreement on natural photos (for ImageNet-size models)."""
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize

    photos = natural_photos(model.input_shape[1])
    x = normalize(photos, "torch").numpy()
    reference = tf.function(from_uint8)(tf.constant(photos)).numpy()
    result = {}
    for name, path in artifacts.items():
        probs = FORMATS[name].runner(path)(x)
        result[name] = {"top1_agreement": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
                        "max_abs_diff": float(np.abs(probs - reference).max())}
    return result


def summarize(report, max_int8_drop):
    """The failures of a report: tolerances of each format, and the int8 accuracy drop."""
    rows = report["artifacts"]
    failures = []
    for name, row in rows.items():
        tol = FORMATS[name].tolerance if name in FORMATS else None
        if tol is not None and row["max_abs_diff"] > tol:
            failures.append(f"{name} differs from Keras by {row['max_abs_diff']:.2e} > {tol}")
    drop = None
    if "int8" in rows and "accuracy" in rows["int8"]:
        drop = 100 * (rows["keras"]["accuracy"] - rows["int8"]["accuracy"])
        if max_int8_drop is not None and drop > max_int8_drop:
            failures.append(f"int8 top-1 accuracy drops {drop:.2f} points > {max_int8_drop}")
    return {"failures": failures, "int8_top1_drop": drop}
