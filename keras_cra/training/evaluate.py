"""Evaluate a `.keras` model or an exported SavedModel on a dataset split."""

import argparse
import json
import os

import numpy as np

from keras_cra.cli import (
    UsageError,
    check_output_dir,
    check_output_file,
    load_keras_model,
    run,
)
from keras_cra.errors import ArgumentError
from keras_cra.files import atomic_output
from keras_cra.training.common import print_table


def load_predictor(path, flag="model"):
    """`(predict_fn(float batch) -> probabilities, input_shape, class count)` for a model
    path. A SavedModel is checked first (`keras_cra.export.safety`): nothing of a file
    whose graphs can do more than compute, or that differs from its export's record,
    is run."""
    import tensorflow as tf

    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        from keras_cra.export import safety

        loaded = safety.load_saved_model(path, flag)
        if "serving_preprocessed" not in loaded.signatures:
            raise UsageError(
                f"{path} is a SavedModel without a 'serving_preprocessed' signature "
                f"(export it with keras_cra.export). Received: {flag}={path}"
            )
        fn = loaded.signatures["serving_preprocessed"]
        spec = fn.structured_input_signature[1]
        shape = tuple(next(iter(spec.values())).shape[1:])
        name = next(iter(spec))
        count = next(iter(fn.structured_outputs.values())).shape[-1]
        return ((lambda x: next(iter(fn(**{name: tf.constant(x)}).values())).numpy()), shape,
                None if count is None else int(count))
    if os.path.isdir(path):
        raise UsageError(
            f"{flag} must be a .keras file or an exported SavedModel folder (with "
            f"saved_model.pb). Received: {flag}={path}"
        )
    model = load_keras_model(path, flag)
    return ((lambda x: model.predict_on_batch(x)), tuple(model.input_shape[1:]),
            int(model.output_shape[-1]))


def to_probabilities(outputs):
    outputs = np.asarray(outputs, dtype="float64")
    if np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        return outputs
    z = outputs - outputs.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


EVAL_FILES = ("eval_metrics.json", "confusion_matrix.png")


def evaluate(model_path, dataset="fashion_mnist", split="test", data_dir=None,
             manual_dir=None, batch_size=128, out=None, style=None, verbose=0, gates=None,
             gate_images=64, overwrite=False):
    """Top-1, top-5, loss and confusion matrix of a model on a split.

    `verbose`: 0 silent, 1 a progress bar per batch, 2 one line at the end.
    `gates`: a PNG path: writes the gate values of every attention layer on
    the first `gate_images` images of the split (see
    `keras_cra.inspect.plot_gate_statistics`); needs a `.keras` model.
    `out` (`eval_metrics.json`, `confusion_matrix.png`) and `gates` are
    checked before any work and never replace an existing file unless
    `overwrite`; each is written atomically.
    """
    import keras

    from keras_cra import data

    if out:
        check_output_dir(out)
        for name in EVAL_FILES:
            check_output_file(os.path.join(out, name), "--out", overwrite)
    from keras_cra.training.config import MAX_BATCH_SIZE, check_int

    check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    if gates is not None:
        if not isinstance(gate_images, int) or gate_images < 1:
            raise UsageError(f"--gate-images must be an integer >= 1. "
                             f"Received: --gate-images {gate_images}")
        if not str(gates).endswith(".png"):
            raise UsageError(f"--gates must be a .png path. Received: --gates {gates}")
        check_output_file(gates, "--gates", overwrite)
        if os.path.isdir(model_path):
            raise UsageError("--gates reads the attention layers of a .keras model, not of an "
                             f"exported SavedModel. Received: model={model_path}")
    predict, shape, _ = load_predictor(model_path)
    ds, info = data.load(dataset, split, data_dir, manual_dir)
    if style is None:
        from keras_cra.applications import zoo

        style = zoo.style_for_input(shape[0])
    pipe = data.make_dataset(ds, info.num_examples, min(batch_size, info.num_examples),
                             shape[0], shape[-1],
                             style=style, training=False)
    labels, probs, first_images = [], [], []
    progress = keras.utils.Progbar(-(-info.num_examples // batch_size), verbose=verbose,
                                   unit_name="batch")
    for x, y in pipe:
        probs.append(to_probabilities(predict(x.numpy())))
        labels.append(y.numpy())
        if gates is not None and sum(map(len, first_images)) < gate_images:
            first_images.append(x.numpy())
        progress.add(1)
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    if probs.shape[1] != info.num_classes:
        raise UsageError(
            f"The model predicts {probs.shape[1]} classes but {dataset} has {info.num_classes}."
        )
    top5 = np.argsort(-probs, axis=1)[:, :5]
    metrics = {
        "model": model_path,
        "dataset": dataset,
        "split": split,
        "examples": int(len(labels)),
        "top1": float(np.mean(top5[:, 0] == labels)),
        "top5": float(np.mean(np.any(top5 == labels[:, None], axis=1))),
        "loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)))),
    }
    confusion = np.zeros((info.num_classes, info.num_classes), np.int64)
    np.add.at(confusion, (labels, top5[:, 0]), 1)
    if out:
        os.makedirs(out, exist_ok=True)
        with atomic_output(os.path.join(out, EVAL_FILES[0]), "--out", overwrite) as tmp:
            with open(tmp, "w") as f:
                json.dump(metrics | {"confusion_matrix": confusion.tolist()}, f, indent=2)
        with atomic_output(os.path.join(out, EVAL_FILES[1]), "--out", overwrite) as tmp:
            save_confusion_png(confusion, info.class_names, tmp)
    if gates is not None:
        from keras_cra import inspect

        model = load_keras_model(model_path, "model")
        try:
            stats = inspect.gate_statistics(model, np.concatenate(first_images)[:gate_images],
                                            batch_size=batch_size)
        except ArgumentError as e:
            raise UsageError(f"--gates: {e}") from e
        with atomic_output(gates, "--gates", overwrite) as tmp:
            inspect.plot_gate_statistics(stats, tmp)
        metrics["gates_png"] = str(gates)
    return metrics, confusion


def save_confusion_png(confusion, class_names, path):
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    n = len(confusion)
    fig = Figure(figsize=(max(5, n * 0.6), max(4, n * 0.5)))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def build_parser():
    p = argparse.ArgumentParser(description="Evaluate a .keras model or SavedModel.")
    p.add_argument("model", help="a .keras file or an exported SavedModel folder")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--manual-dir", default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=None, help="folder for eval_metrics.json and the PNG")
    p.add_argument("--gates", default=None, metavar="PNG",
                   help="write a PNG of the attention gates (per stage: channels x images "
                        "heatmap and histogram); needs a .keras model")
    p.add_argument("--gate-images", type=int, default=64,
                   help="how many images of the split --gates uses")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing --out files and --gates PNG")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)

    def command():
        from keras_cra.training.config import progress_verbosity

        metrics, _ = evaluate(a.model, a.dataset, a.split, a.data_dir, a.manual_dir,
                              a.batch_size, a.out, verbose=progress_verbosity(None),
                              gates=a.gates, gate_images=a.gate_images,
                              overwrite=a.overwrite)
        print_table(f"Evaluation of {a.model} on {a.dataset}:{a.split}", metrics)

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
