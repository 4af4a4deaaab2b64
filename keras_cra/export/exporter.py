"""Export a Keras model to SavedModel and TFLite, verified against Keras.

Everything is written to a temporary folder next to the destination and
moved into place only after verification passes, so an existing export is
never half-overwritten.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from keras_cra.export import tflite

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
# Max |probability difference| vs Keras, per artifact.
TOLERANCES = {"saved_model": 1e-5, "float32": 1e-4, "float16": 1e-2}
PREPROCESSING = {
    "mode": "torch",
    "description": "RGB uint8 -> x / 255, minus mean, divided by std (per channel)",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


class ExportError(ValueError):
    """A model, folder or dataset that cannot be exported (message is for users)."""


def load_model(model_or_path):
    import keras

    from keras_cra.files import UsageError, load_keras_model

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    try:
        return load_keras_model(model_or_path, "model")
    except UsageError as e:
        raise ExportError(str(e)) from e


# What an export writes; a folder holding anything else is never replaced.
EXPORT_FILES = {"saved_model", "labels.txt", "metadata.json", "verification.json"} | {
    f"model_{variant}.tflite" for variant in TFLITE_VARIANTS}


def is_export_folder(path):
    """Whether `path` holds an earlier export and nothing else.

    An export is recognised by its `metadata.json` (written by every export,
    with the preprocessing and the artifacts' sha256) and by holding only
    the files an export writes.
    """
    try:
        names = set(os.listdir(path))
        with open(os.path.join(path, "metadata.json")) as f:
            metadata = json.load(f)
    except (OSError, ValueError):
        return False
    return (isinstance(metadata, dict) and {"preprocessing", "sha256"} <= set(metadata)
            and names <= EXPORT_FILES)


def check_out_dir(out_dir, overwrite):
    """Refuses an export folder that would lose files that an export did not make."""
    from keras_cra.files import UsageError, check_output_dir

    try:
        out_dir = check_output_dir(out_dir, "--out")
    except UsageError as e:
        raise ExportError(str(e)) from e
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not is_export_folder(out_dir):
            raise ExportError(
                f"{out_dir} holds files that are not an earlier export; choose another --out "
                f"or empty it yourself. Nothing was deleted. Received: out={out_dir}"
            )
        if not overwrite:
            raise ExportError(
                f"{out_dir} holds an earlier export; pass overwrite=True (--overwrite) to "
                f"replace it. Received: out={out_dir}"
            )
    return out_dir


def outputs_probabilities(model):
    """Whether the model's output is already a softmax."""
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax


def serving_functions(model):
    """`(probabilities(preprocessed float), probabilities(uint8 RGB))` TF functions."""
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize

    softmax = not outputs_probabilities(model)

    def from_preprocessed(x):
        y = model(x, training=False)
        y = tf.cast(y, tf.float32)
        return tf.nn.softmax(y) if softmax else y

    def from_uint8(images):
        return from_preprocessed(normalize(images, "torch"))

    return from_preprocessed, from_uint8


def _probability_model(model):
    """A Keras model returning probabilities (for TFLite conversion)."""
    import keras

    if outputs_probabilities(model):
        return model
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(model.output)
    return keras.Model(model.inputs, outputs, name=model.name + "_probabilities")


def write_saved_model(model, path):
    import keras
    import tensorflow as tf

    shape = tuple(model.input_shape[1:])
    from_preprocessed, from_uint8 = serving_functions(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", from_uint8,
        input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serving_preprocessed", from_preprocessed,
        input_signature=[tf.TensorSpec((None,) + shape, tf.float32, name="inputs")],
    )
    archive.write_out(path, verbose=False)


def find_unsupported_layers(model):
    """Names of layers that do not convert to builtin TFLite ops on their own."""
    import keras

    bad = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inputs = [keras.Input(t.shape[1:], dtype=t.dtype) for t in _as_list(layer.input)]
            sub = keras.Model(inputs, layer(inputs if len(inputs) > 1 else inputs[0]))
            if any(d is None for d in sub.input_shape[1:] if not isinstance(d, tuple)):
                continue
            tflite.convert(sub, batch_size=1)
        except tflite.UnsupportedOpsError:
            bad.append(f"{layer.name} ({layer.__class__.__name__})")
        except Exception:
            continue
    return bad


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def convert_tflite(model, variant, representative=None, integer_io="float"):
    try:
        return tflite.convert(
            _probability_model(model), quantization=variant, batch_size=1,
            representative_data=representative if variant == "int8" else None,
            integer_io=integer_io if variant == "int8" else "float",
        )
    except tflite.UnsupportedOpsError as e:
        layers = find_unsupported_layers(model)
        raise ExportError(
            "The model has layers that TFLite cannot run with builtin ops: "
            f"{', '.join(layers) or '(could not isolate them)'}. {e}"
        ) from e


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _median_latency(fn, repeats=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def validation_data(model, dataset, split, data_dir, examples):
    """Preprocessed images, labels and class names from a dataset split."""
    from keras_cra import data
    from keras_cra.applications import zoo

    shape = tuple(model.input_shape[1:])
    ds, info = data.load(dataset, f"{split}[:{examples}]", data_dir)
    style = zoo.style_for_input(shape[0])
    batches = data.make_dataset(ds, info.num_examples, 256, shape[0], shape[-1], style=style)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    return np.concatenate(xs), np.concatenate(ys), info.class_names


def calibration_data(model, dataset, data_dir, batches, batch_size=32, seed=0):
    """Representative batches drawn from the training split (eval preprocessing)."""
    from keras_cra import data
    from keras_cra.applications import zoo

    shape = tuple(model.input_shape[1:])
    n = batches * batch_size
    ds, info = data.load(dataset, f"train[:{n}]", data_dir)
    style = zoo.style_for_input(shape[0])
    return [x.numpy() for x, _ in data.make_dataset(ds, info.num_examples, batch_size, shape[0],
                                                     shape[-1], style=style)]


def natural_photos(size):
    """scikit-image sample photos, resized to `size` (uint8 RGB)."""
    import tensorflow as tf
    from skimage import data as skdata

    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    return np.stack([
        tf.image.resize(p, (size, size), method="bicubic", antialias=True).numpy()
        .clip(0, 255).astype(np.uint8) for p in photos
    ])


def export_model(
    model_or_path,
    out_dir,
    dataset="fashion_mnist",
    split="test",
    data_dir=None,
    verify_examples=1000,
    calibration_batches=8,
    integer_io="float",
    variants=TFLITE_VARIANTS,
    class_names=None,
    overwrite=False,
    source_name=None,
    max_int8_drop=1.0,
    representative_data=None,
    latency_repeats=20,
):
    """Exports and verifies; returns the verification report (also saved as JSON).

    Args:
        model_or_path: a Keras model or a `.keras` file.
        out_dir: destination folder (e.g. `saved_models/NAME`).
        dataset, split, data_dir: where validation images come from (`None`
            for dataset: random images plus natural photos only).
        verify_examples: how many validation images to compare on.
        calibration_batches: representative batches (of 32 training images)
            for full-integer quantization.
        integer_io: I/O type of the int8 model: `"float"`, `"int8"`, `"uint8"`.
        variants: TFLite variants to write.
        class_names: labels (default: the dataset's).
        overwrite: replace an existing export (atomically).
        max_int8_drop: max allowed drop of int8 top-1 accuracy in points
            (`None`: report only).
        representative_data: explicit calibration batches (overrides the
            dataset's).
    """
    import tensorflow as tf

    for v in variants:
        if v not in TFLITE_VARIANTS:
            raise ExportError(f"Unknown TFLite variant. Valid: {TFLITE_VARIANTS}. Received: {v!r}")
    for name, value in (("verify_examples", verify_examples),
                        ("calibration_batches", calibration_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f"--{name.replace('_', '-')} must be an integer >= 1. "
                              f"Received: {name}={value!r}")
    out_dir = check_out_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    except OSError as e:
        raise ExportError(f"Cannot write to the output folder {parent}: {e}") from e

    try:
        model = load_model(model_or_path)
        shape = tuple(model.input_shape[1:])
        if len(shape) != 3 or any(d is None for d in shape):
            raise ExportError(
                f"Export needs a fixed (H, W, C) input size. Received: input_shape={model.input_shape}"
            )
        rng = np.random.default_rng(0)
        if dataset:
            x_val, y_val, names = validation_data(model, dataset, split, data_dir, verify_examples)
        else:
            x_val = rng.normal(size=(8,) + shape).astype("float32")
            y_val, names = None, None
        class_names = class_names or names or [f"class_{i}" for i in range(model.output_shape[-1])]
        if representative_data is None:
            representative_data = (
                calibration_data(model, dataset, data_dir, calibration_batches)
                if dataset else [rng.normal(size=(4,) + shape).astype("float32")]
            )

        from_preprocessed, from_uint8 = serving_functions(model)
        keras_fn = tf.function(from_preprocessed)
        keras_probs = np.concatenate([keras_fn(x_val[i:i + 256]).numpy()
                                      for i in range(0, len(x_val), 256)])

        write_saved_model(model, os.path.join(tmp, "saved_model"))
        artifacts = {"saved_model": os.path.join(tmp, "saved_model")}
        for variant in variants:
            flat = convert_tflite(model, variant, representative_data, integer_io)
            path = os.path.join(tmp, f"model_{variant}.tflite")
            with open(path, "wb") as f:
                f.write(flat)
            artifacts[variant] = path

        report = verify(artifacts, keras_fn, x_val, y_val, keras_probs, model,
                        latency_repeats=latency_repeats)
        if shape[0] >= 64 and shape[-1] == 3:
            report["photos"] = verify_photos(artifacts, model, from_uint8)
        report["summary"] = summarize(report, max_int8_drop)
        _write_sidecars(tmp, model, class_names, artifacts, report, source_name, integer_io)
        failures = report["summary"]["failures"]
        if failures:
            raise ExportError("Verification failed: " + "; ".join(failures))
        _move_into_place(tmp, out_dir)
        tmp = None
    finally:
        if tmp and os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(report, out_dir)
    return report


def _run_artifact(name, path, x, num_threads=None):
    import tensorflow as tf

    if name == "saved_model":
        fn = tf.saved_model.load(path).signatures["serving_preprocessed"]
        return np.concatenate([fn(inputs=tf.constant(x[i:i + 256]))["output_0"].numpy()
                               for i in range(0, len(x), 256)])
    return tflite.run(path, x, num_threads=num_threads)


def verify(artifacts, keras_fn, x, y, keras_probs, model, latency_repeats=20):
    import tensorflow as tf

    rows = {}
    keras_top1 = keras_probs.argmax(-1)
    single = x[:1]
    keras_row = {"size_mb": None, "max_abs_diff": 0.0, "top1_agreement": 1.0,
                 "latency_ms_all_threads": _median_latency(lambda: keras_fn(single),
                                                           latency_repeats)}
    if y is not None:
        keras_row["accuracy"] = float(np.mean(keras_top1 == y))
    rows["keras"] = keras_row
    cpus = os.cpu_count() or 1
    for name, path in artifacts.items():
        probs = _run_artifact(name, path, x)
        row = {
            "size_mb": round((_dir_size(path) if os.path.isdir(path) else os.path.getsize(path)) / 2**20, 3),
            "max_abs_diff": float(np.abs(probs - keras_probs).max()),
            "top1_agreement": float(np.mean(probs.argmax(-1) == keras_top1)),
        }
        if y is not None:
            row["accuracy"] = float(np.mean(probs.argmax(-1) == y))
        if name == "saved_model":
            fn = tf.saved_model.load(path).signatures["serving_preprocessed"]
            row["latency_ms_all_threads"] = _median_latency(
                lambda: fn(inputs=tf.constant(single)), latency_repeats)
        else:
            for threads, key in ((1, "latency_ms_1_thread"), (cpus, "latency_ms_all_threads")):
                interp = tflite.interpreter(path, num_threads=threads)
                tflite.run(None, single, interp=interp)
                row[key] = _median_latency(lambda: tflite.run(None, single, interp=interp),
                                           latency_repeats)
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
        probs = _run_artifact(name, path, x)
        result[name] = {"top1_agreement": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
                        "max_abs_diff": float(np.abs(probs - reference).max())}
    return result


def summarize(report, max_int8_drop):
    rows = report["artifacts"]
    failures = []
    for name, tol in TOLERANCES.items():
        if name in rows and rows[name]["max_abs_diff"] > tol:
            failures.append(f"{name} differs from Keras by {rows[name]['max_abs_diff']:.2e} > {tol}")
    drop = None
    if "int8" in rows and "accuracy" in rows["int8"]:
        drop = 100 * (rows["keras"]["accuracy"] - rows["int8"]["accuracy"])
        if max_int8_drop is not None and drop > max_int8_drop:
            failures.append(f"int8 top-1 accuracy drops {drop:.2f} points > {max_int8_drop}")
    return {"failures": failures, "int8_top1_drop": drop}


def _write_sidecars(folder, model, class_names, artifacts, report, source_name, integer_io):
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(class_names) + "\n")
    hashes = {}
    for name, path in artifacts.items():
        rel = os.path.relpath(path, folder)
        if os.path.isdir(path):
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
            hashes[rel] = {os.path.relpath(p, folder): sha256_of(p) for p in files}
        else:
            hashes[rel] = sha256_of(path)
    metadata = {
        "source_model": source_name or model.name,
        "input_size": list(model.input_shape[1:]),
        "classes": class_names,
        "preprocessing": PREPROCESSING,
        "inputs": {
            "saved_model/serving_default": "uint8 RGB images (N, H, W, 3); preprocessing baked in",
            "saved_model/serving_preprocessed": "float32, preprocessed as `preprocessing` says",
            "tflite": "float32 preprocessed images, batch 1"
                      + (f"; model_int8.tflite uses {integer_io} I/O" if integer_io != "float" else ""),
        },
        "outputs": "class probabilities",
        "sha256": hashes,
    }
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    with open(os.path.join(folder, "verification.json"), "w") as f:
        json.dump(report, f, indent=2)


def _move_into_place(tmp, out_dir):
    backup = None
    if os.path.exists(out_dir):
        backup = out_dir + ".old-" + os.path.basename(tmp)
        os.rename(out_dir, backup)
    os.rename(tmp, out_dir)
    if backup:
        shutil.rmtree(backup, ignore_errors=True)


def print_report(report, out_dir):
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(json.dumps(report, indent=2))
        return
    cols = {"size_mb": "MB", "accuracy": "top-1", "top1_agreement": "agree",
            "max_abs_diff": "max|dp|", "latency_ms_1_thread": "ms 1thr",
            "latency_ms_all_threads": "ms all"}
    table = Table(title=f"Export verification ({report['examples']} images) -> {out_dir}")
    table.add_column("artifact", no_wrap=True)
    for header in cols.values():
        table.add_column(header, justify="right", no_wrap=True)
    for name, row in report["artifacts"].items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("-" if v is None else (f"{v:.2e}" if c == "max_abs_diff" else
                                                f"{v:.4f}" if isinstance(v, float) else str(v)))
        table.add_row(name, *cells)
    Console(width=max(100, shutil.get_terminal_size().columns)).print(table)
    drop = report["summary"]["int8_top1_drop"]
    if drop is not None:
        Console().print(f"int8 top-1 accuracy drop vs Keras: {drop:.2f} points")
