"""Detection training with `model.fit`: RetinaNet (keras-hub) on a CRA backbone.

The run folder follows `training/train.py`'s rules (lock, config.json,
atomic last.keras each epoch, state.json, history.csv, TensorBoard logs,
`--resume` with the run's settings, NaN stop); at the end the detector is
evaluated with pycocotools (COCO mAP) into metrics.json, and
predictions.png draws its boxes on held-out images.
"""

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from keras_cra.cli import UsageError, check_output_dir
from keras_cra.errors import ArgumentError
from keras_cra.files import write_json_atomic
from keras_cra.training import run_folder
from keras_cra.training.common import build_loss_trackers, build_optimizer, print_table, run_cli
from keras_cra.training.config import (
    RunConfig,
    add_run_args,
    check_int,
    flag,
    given_flags,
    progress_verbosity,
    received,
    validate_run,
)

PREDICTIONS_PNG = run_folder.PREDICTIONS_PNG


@dataclasses.dataclass
class DetectConfig(RunConfig):
    """A detector's training run: `RunConfig`'s settings (with a detector's defaults), the
    backbone, the boxes and the head."""

    dataset: str = "fashion_mnist_scenes"
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    warmup_epochs: float = 0.5
    out: str = "runs/detect"
    verbose: int = 2
    backbone: str = "CRAResNet18"
    backbone_weights: str | None = None
    train_count: int | None = None
    eval_count: int | None = None
    max_boxes: int = 20
    head_convs: int = 2
    export: str | None = None

    def resolved(self):
        out = dataclasses.replace(self)
        out.attention = None if out.attention in (None, "none") else out.attention
        return out


QUICK = dict(train_count=64, eval_count=24, image_size=64, epochs=1, batch_size=16,
             head_convs=1)


# keras-hub's RetinaNet heads default to 4 convolutions; more only costs memory.
MAX_HEAD_CONVS = 8
MAX_BOXES = 1000
MAX_COUNT = 10_000_000


def validate(c):
    for key in ("image_size", "epochs", "batch_size", "lr"):
        if getattr(c, key) is None:  # required here (RunConfig lets a recipe fill them)
            raise UsageError(f"{flag(key)} must be given. {received(key, None)}")
    validate_run(c)
    for key, high in (("max_boxes", MAX_BOXES), ("head_convs", MAX_HEAD_CONVS)):
        check_int(key, getattr(c, key), 1, high)
    for key in ("train_count", "eval_count"):
        if getattr(c, key) is not None:
            check_int(key, getattr(c, key), 1, MAX_COUNT)
    if c.image_size % 32 or c.image_size < 64:
        raise UsageError(f"{flag('image_size')} must be a multiple of 32, >= 64. "
                         f"{received('image_size', c.image_size)}")
    from keras_cra.applications import zoo

    if c.backbone not in zoo.ZOO:
        raise UsageError(f"Unknown backbone. Valid names: {zoo.names()}. "
                         f"Received: --backbone {c.backbone}")


def _datasets(config):
    from keras_cra.detection import data

    train_ds, class_names, n_train = data.load(
        config.dataset, config.train_split, config.image_size, config.max_boxes,
        config.train_count, config.data_dir, config.manual_dir, seed=config.seed)
    eval_ds, _, n_eval = data.load(
        config.dataset, config.eval_split, config.image_size, config.max_boxes,
        config.eval_count, config.data_dir, config.manual_dir, seed=config.seed)
    if config.train_count:
        train_ds, n_train = train_ds.take(config.train_count), min(n_train, config.train_count)
    if config.eval_count:
        eval_ds, n_eval = eval_ds.take(config.eval_count), min(n_eval, config.eval_count)
    return train_ds, eval_ds, class_names, n_train, n_eval


def _compile(model, config, steps):
    import keras

    from keras_cra.training.schedules import EpochSchedule

    schedule = EpochSchedule(config.lr, steps, config.epochs, "cosine", [],
                             warmup_epochs=config.warmup_epochs)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.0))
    return build_optimizer(model)


def train_detector(config):
    """Trains (or resumes) a detector run; returns its metrics dict."""
    config = config.resolved()
    validate(config)
    check_output_dir(config.out)
    with run_folder.lock(config.out):
        initial_epoch, _ = run_folder.prepare(config)
        return _train(config, initial_epoch)


def _train(config, initial_epoch):
    import keras

    import keras_cra.training.schedules  # noqa: F401 (registers EpochSchedule)
    from keras_cra.detection import data
    from keras_cra.detection.model import build_detector
    from keras_cra.training.callbacks import AtomicCheckpoint, RunState, StopOnNaN, fit
    from keras_cra.training.common import configure_determinism

    out = config.out
    if initial_epoch >= config.epochs and os.path.exists(os.path.join(out, "metrics.json")):
        raise UsageError(f"The run in {out} has finished all {config.epochs} epochs already.")
    if config.export:
        check_output_dir(config.export)
        if os.path.isdir(config.export) and os.listdir(config.export):
            raise UsageError(f"{flag('export')} {config.export} is not empty; choose an empty "
                             "or new folder. Nothing was overwritten.")
    configure_determinism(config.seed)
    train_ds, eval_ds, class_names, n_train, n_eval = _datasets(config)
    steps = n_train // config.batch_size
    if steps < 1:
        raise UsageError(f"The training split has {n_train} images, fewer than one batch. "
                         f"Received: --batch-size {config.batch_size}")
    if not config.resume:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config) | {"class_names": class_names}, f, indent=2)
    try:
        model = build_detector(config.backbone, len(class_names), config.image_size,
                               config.attention, config.backbone_weights, config.head_convs)
    except ArgumentError as e:
        raise UsageError(f"Cannot build the detector: {e}") from e
    _compile(model, config, steps)
    if config.resume:
        # keras-hub's detector has its own compile(), which .keras loading does not
        # replay: rebuild, compile, then read the weights and the optimizer state.
        model.load_weights(os.path.join(out, "last.keras"))
    train = data.pipeline(train_ds, config.batch_size, config.image_size, training=True,
                          seed=config.seed, epochs=config.epochs)
    evaluation = data.pipeline(eval_ds, config.batch_size, config.image_size, training=False)
    build_loss_trackers(model, *next(iter(evaluation.take(1))))
    stopper = StopOnNaN()
    start = time.time()
    fit(
        model,
        [stopper, AtomicCheckpoint(os.path.join(out, "last.keras")),
         keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=config.resume),
         keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
         RunState(out, monitor="val_loss")],
        x=train, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
        validation_data=evaluation, verbose=config.verbose,
    )
    if stopper.diverged_at is not None:
        epoch, step = stopper.diverged_at
        raise UsageError(
            f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, step "
            f"{step + 1} (--lr {config.lr}). Lower --lr or check the data. The checkpoint in "
            f"{out} is that of the last epoch that finished.")
    train_seconds = time.time() - start
    metrics, examples = evaluate_detector(model, eval_ds, config.batch_size)
    metrics = {"backbone": config.backbone, "attention": config.attention or "none",
               "dataset": config.dataset, "eval_split": config.eval_split,
               "eval_images": n_eval, "epochs": config.epochs,
               **{k: round(v, 4) for k, v in metrics.items()},
               "params": int(model.count_params()), "train_seconds": round(train_seconds, 1)}
    draw_predictions(examples, class_names, os.path.join(out, PREDICTIONS_PNG))
    if config.export:
        from keras_cra.detection.export import export_detector

        images = np.stack([e["image"] for e in examples]).astype("uint8")
        exported = export_detector(model, config.export, config.image_size, class_names,
                                   verify_images=images)
        metrics["export"] = config.export
        metrics["export_verification"] = exported["verification"]
    # Written last: a run stopped before it (during the evaluation or the export) is
    # finished by `--resume`, which then trains no more epochs.
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)
    return metrics


def evaluate_detector(model, eval_ds, batch_size, keep=8):
    """COCO metrics of `model` on `eval_ds`; also returns the first `keep` images with
    their ground truth and predictions (for pictures)."""
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize
    from keras_cra.detection import metrics

    gt_boxes, gt_labels, gt_crowd = [], [], []
    pred_boxes, pred_labels, pred_scores = [], [], []
    images = []
    for batch in eval_ds.batch(batch_size):
        # keras-hub's NMS needs a static batch size: pad a short last batch.
        n = int(batch["images"].shape[0])
        x = normalize(batch["images"])
        if n < batch_size:
            x = tf.concat([x, tf.zeros((batch_size - n,) + tuple(x.shape[1:]), x.dtype)], 0)
        predictions = {k: np.asarray(v)[:n] for k, v in
                       model.predict(x, batch_size=batch_size, verbose=0).items()}
        gt_boxes += list(batch["boxes"].numpy())
        gt_labels += list(batch["labels"].numpy())
        gt_crowd += list(batch["crowd"].numpy())
        pred_boxes += list(predictions["boxes"])
        pred_labels += list(predictions["labels"])
        pred_scores += list(predictions["confidence"])
        if len(images) < keep:
            images += list(batch["images"].numpy()[: keep - len(images)])
    result = metrics.coco_metrics(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_scores,
                                  gt_crowd)
    examples = [{"image": images[i], "gt_boxes": gt_boxes[i], "gt_labels": gt_labels[i],
                 "boxes": pred_boxes[i], "labels": pred_labels[i], "scores": pred_scores[i]}
                for i in range(len(images))]
    return result, examples


def draw_predictions(examples, class_names, path, min_score=0.3):
    """A PNG grid: each image with its true boxes (green) and predictions above
    `min_score` (red, with class and score)."""
    from matplotlib.figure import Figure

    from keras_cra.detection.inference import draw_boxes

    cols = min(4, len(examples))
    rows = -(-len(examples) // cols)
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, ex in zip(axes.ravel(), examples):
        ax.imshow(ex["image"].astype("uint8"))
        draw_boxes(ax, ex["gt_boxes"], ex["gt_labels"], color="lime", linewidth=1)
        draw_boxes(ax, ex["boxes"], ex["labels"], class_names, ex["scores"], min_score,
                   linewidth=1, fontsize=6)
    fig.suptitle("green: true boxes, red: predictions (score >= %.1f)" % min_score, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03, hspace=0.03)
    fig.savefig(path, dpi=90)
    return path


def build_parser():
    p = argparse.ArgumentParser(description="Train a RetinaNet on a CRA backbone.")
    add_run_args(p, DetectConfig, helps={
        "dataset": "fashion_mnist_scenes (offline), coco/2017 or voc/2007 (tfds)"})
    p.add_argument("--backbone", default="CRAResNet18")
    p.add_argument("--backbone-weights", default=None,
                   help="imagenet (the zoo's registered weights) or a .keras classifier")
    p.add_argument("--train-count", type=int, default=None,
                   help="training images (scenes: how many to make; tfds: the first N)")
    p.add_argument("--eval-count", type=int, default=None)
    p.add_argument("--max-boxes", type=int, default=20)
    p.add_argument("--head-convs", type=int, default=2)
    p.add_argument("--export", default=None, metavar="DIR",
                   help="after training, export the detector to DIR (SavedModel with NMS, "
                        "builtins-only TFLite up to the decoded boxes), verified against Keras")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run (64 scenes of 64x64, one epoch) to check the setup")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        if args.resume:
            config = run_folder.config_for_resume(args, given_flags(parser, argv), DetectConfig)
        else:
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DetectConfig)}
            if args.quick:
                given = given_flags(parser, argv)
                values.update({k: v for k, v in QUICK.items() if k not in given})
            values["verbose"] = progress_verbosity(args.verbose)
            config = DetectConfig(**values)
        print_table(f"Detection ({config.out})", train_detector(config))

    return run_cli(command, out=lambda: args.out)


if __name__ == "__main__":
    import sys

    sys.exit(main())
