"""Export a Keras model to every registered format, verified against Keras.

Everything is written to a temporary folder next to the destination and
moved into place only after verification passes (`keras_cra.files.atomic_output`),
so an existing export is never half-overwritten. The formats live in `keras_cra.export.formats`.
"""

import os

import numpy as np

from keras_cra.export import verify as verify_lib
from keras_cra.export.formats import (  # noqa: F401
    DEFAULT_VARIANTS, FORMATS, TFLITE_VARIANTS, VARIANTS, ExportError)
from keras_cra.export.report import print_report, write_sidecars  # noqa: F401 (CLI API)
from keras_cra.export.serving import outputs_probabilities, serving_functions  # noqa: F401
from keras_cra.errors import flag
from keras_cra.files import atomic_output, sha256_of  # noqa: F401 (sha256_of re-exported)


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
EXPORT_FILES = {f.artifact for f in FORMATS.values()} | {
    "labels.txt", "metadata.json", "verification.json"}


def is_export_folder(path, files=EXPORT_FILES, keys=("preprocessing", "sha256")):
    """Whether `path` holds an earlier export and nothing else.

    An export is recognised by its `metadata.json` (written by every export,
    with `keys`: for a classifier the preprocessing and the artifacts' sha256)
    and by holding only the `files` an export writes.
    """
    import json

    try:
        names = set(os.listdir(path))
        with open(os.path.join(path, "metadata.json")) as f:
            metadata = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and set(keys) <= set(metadata) and names <= set(files)


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


def export_model(
    model_or_path,
    out_dir,
    dataset="fashion_mnist",
    split="test",
    data_dir=None,
    verify_examples=1000,
    calibration_batches=8,
    integer_io="float",
    variants=DEFAULT_VARIANTS,
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
        variants: the formats to write besides the SavedModel (always
            written), from `VARIANTS`: the TFLite variants (the default) and
            `"onnx"` (needs the `[onnx]` extra).
        class_names: labels (default: the dataset's).
        overwrite: replace an earlier export (atomically); a folder holding
            anything else is never replaced.
        max_int8_drop: max allowed drop of int8 top-1 accuracy in points
            (`None`: report only).
        representative_data: explicit calibration batches (overrides the
            dataset's).
    """
    import tensorflow as tf

    for v in variants:
        if v not in VARIANTS:
            raise ExportError(f"Unknown export variant. Valid: {VARIANTS}. "
                              f"Received: variants={list(variants)!r}")
    if "onnx" in variants:  # before any work: the extra is optional
        from keras_cra.export.onnx import check_available

        check_available()
    for name, value in (("verify_examples", verify_examples),
                        ("calibration_batches", calibration_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f"{flag(name)} must be an integer >= 1. Received: {name}={value!r}")
    out_dir = check_out_dir(out_dir, overwrite)
    try:
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    except OSError as e:
        raise ExportError(f"Cannot write to the output folder {out_dir}: {e}") from e
    with atomic_output(out_dir, "--out", overwrite, is_export_folder, folder=True) as tmp:
        model = load_model(model_or_path)
        shape = tuple(model.input_shape[1:])
        if len(shape) != 3 or any(d is None for d in shape):
            raise ExportError(
                f"Export needs a fixed (H, W, C) input size. Received: input_shape={model.input_shape}"
            )
        rng = np.random.default_rng(0)
        if dataset:
            x_val, y_val, names = verify_lib.validation_data(model, dataset, split, data_dir,
                                                             verify_examples)
        else:
            x_val = rng.normal(size=(8,) + shape).astype("float32")
            y_val, names = None, None
        class_names = class_names or names or [f"class_{i}" for i in range(model.output_shape[-1])]
        if representative_data is None:
            representative_data = (
                verify_lib.calibration_data(model, dataset, data_dir, calibration_batches)
                if dataset else [rng.normal(size=(4,) + shape).astype("float32")]
            )

        from_preprocessed, from_uint8 = serving_functions(model)
        keras_fn = tf.function(from_preprocessed)
        keras_probs = np.concatenate([keras_fn(x_val[i:i + 256]).numpy()
                                      for i in range(0, len(x_val), 256)])

        context = {"representative_data": representative_data, "integer_io": integer_io}
        artifacts = {}
        for name in ("saved_model",) + tuple(variants):
            artifacts[name] = os.path.join(tmp, FORMATS[name].artifact)
            FORMATS[name].write(model, artifacts[name], context)

        report = verify_lib.verify(artifacts, keras_fn, x_val, y_val, keras_probs,
                                   latency_repeats=latency_repeats)
        from keras_cra.applications import zoo

        if zoo.style_for_input(shape[0]) == "imagenet" and shape[-1] == 3:
            report["photos"] = verify_lib.verify_photos(artifacts, model, from_uint8)
        report["summary"] = verify_lib.summarize(report, max_int8_drop)
        write_sidecars(tmp, model, class_names, artifacts, report, source_name, integer_io)
        failures = report["summary"]["failures"]
        if failures:
            raise ExportError("Verification failed: " + "; ".join(failures))
    return report

