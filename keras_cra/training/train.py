"""Training with `model.fit`: the authors' recipes, checkpoints, exact resume."""

import argparse
import dataclasses
import json
import os
import shutil
import time

from keras_cra.training.common import (
    DEMO_MARKER,
    UsageError,
    configure_determinism,
    get_strategy,
    is_chief,
    prepare_for_multiworker,
    print_table,
)

RECIPES = {
    # The authors' ImageNet recipe.
    "imagenet": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, epochs=100,
                     batch_size=256, milestones=(30, 60, 90), image_size=224),
    # He et al. 2016 CIFAR recipe: 164 epochs, x0.1 at 82 and 123 (32k/48k of 64k iterations).
    "cifar": dict(lr=0.1, momentum=0.9, weight_decay=1e-4, epochs=164,
                  batch_size=128, milestones=(82, 123), image_size=None),
}


@dataclasses.dataclass
class TrainConfig:
    model: str = "CRAResNet20"
    attention: str = "cra"
    dataset: str = "fashion_mnist"
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str | None = None
    manual_dir: str | None = None
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    schedule: str = "step"
    milestones: list | None = None
    warmup_epochs: float = 0.0
    weight_decay: float | None = None
    label_smoothing: float = 0.0
    mixed_precision: str = "none"
    mix: str | None = None
    randaugment: bool = False
    seed: int = 0
    strategy: str = "auto"
    out: str = "runs/default"
    resume: bool = False
    jit_compile: bool = False
    verbose: int = 1

    def resolved(self):
        """Fill unset hyper-parameters from the model's recipe."""
        from keras_cra.applications import resnet

        if self.model not in resnet.MODELS:
            raise UsageError(
                f"Unknown model. Valid names: {sorted(resnet.MODELS)}. "
                f"Received: --model {self.model}"
            )
        recipe = RECIPES[resnet.MODELS[self.model]["style"]]
        out = dataclasses.replace(self)
        for key in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "image_size"):
            if getattr(out, key) is None:
                setattr(out, key, recipe[key])
        if out.milestones is None:
            out.milestones = list(recipe["milestones"])
        out.attention = None if out.attention in (None, "none") else out.attention
        return out


def build_parser(description="Train a CRA model with model.fit."):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="CRAResNet20", help="e.g. CRAResNet20, CRAResNet50")
    p.add_argument("--attention", default="cra", choices=["cra", "se", "eca", "none"])
    p.add_argument("--dataset", default="fashion_mnist",
                   help="a tfds name (fashion_mnist, cifar10, imagenette/320px, "
                        "imagenet2012) or folder:/path")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--manual-dir", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--schedule", default="step", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", default=None)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--mixed-precision", default="none",
                   choices=["none", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--mix", default=None, choices=["mixup", "cutmix"])
    p.add_argument("--randaugment", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="auto", choices=["auto", "mirrored", "multiworker"])
    p.add_argument("--out", default="runs/default", help="run folder")
    p.add_argument("--resume", action="store_true", help="resume the run in --out")
    p.add_argument("--jit-compile", action="store_true")
    p.add_argument("--verbose", type=int, default=1)
    return p


def config_from_args(args):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values)


def validate(config):
    c = config
    for key in ("epochs", "batch_size", "image_size"):
        if getattr(c, key) is not None and getattr(c, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1. Received: {getattr(c, key)}")
    if c.lr is not None and c.lr <= 0:
        raise UsageError(f"--lr must be > 0. Received: {c.lr}")
    if not 0 <= c.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1). Received: {c.label_smoothing}")
    if c.warmup_epochs < 0:
        raise UsageError(f"--warmup-epochs must be >= 0. Received: {c.warmup_epochs}")
    if c.epochs is not None and c.warmup_epochs >= c.epochs and c.warmup_epochs > 0:
        raise UsageError(
            f"--warmup-epochs ({c.warmup_epochs}) must be shorter than --epochs ({c.epochs})."
        )


def _prepare_out(config):
    out = config.out
    # A demo run folder starts with only the demo's marker file in it.
    existing = os.path.isdir(out) and set(os.listdir(out)) - {DEMO_MARKER}
    if config.resume:
        if not os.path.exists(os.path.join(out, "last.keras")):
            raise UsageError(f"Cannot resume: no checkpoint {os.path.join(out, 'last.keras')}.")
        with open(os.path.join(out, "config.json")) as f:
            saved = json.load(f)
        for key in ("model", "attention", "dataset", "train_split", "image_size",
                    "batch_size", "seed", "epochs", "schedule", "lr"):
            if getattr(config, key) is not None and saved.get(key) != getattr(config, key):
                raise UsageError(
                    f"Cannot resume: the run in {out} has {key}={saved.get(key)!r} but "
                    f"this command has {key}={getattr(config, key)!r}."
                )
        with open(os.path.join(out, "state.json")) as f:
            return json.load(f)["epochs_done"]
    if existing:
        raise UsageError(
            f"{out} already holds a run; choose another --out, or pass --resume "
            "to continue it. Nothing was overwritten."
        )
    os.makedirs(out, exist_ok=True)
    return 0


def build_model(config, num_classes, channels):
    import keras

    from keras_cra.applications import resnet

    model = resnet.get_model(
        config.model,
        weights=None,
        classes=num_classes,
        input_shape=(config.image_size, config.image_size, channels),
        attention=config.attention,
        classifier_activation=None,
    )
    return model


def compile_model(model, config, steps):
    import keras

    from keras_cra.training.schedules import EpochSchedule

    schedule = EpochSchedule(
        config.lr, steps, config.epochs, config.schedule, config.milestones,
        warmup_epochs=config.warmup_epochs,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, weight_decay=config.weight_decay,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"),
        ],
        jit_compile=config.jit_compile,
    )
    return model


def datasets(config, initial_epoch=0):
    """Train (from `initial_epoch` on) and eval pipelines, one-hot labels."""
    import tensorflow as tf

    from keras_cra import data
    from keras_cra.applications import resnet

    style = resnet.MODELS[config.model]["style"]
    train_ds, info = data.load(config.dataset, config.train_split, config.data_dir, config.manual_dir)
    eval_ds, eval_info = data.load(config.dataset, config.eval_split, config.data_dir, config.manual_dir)
    if config.image_size is None:
        if info.image_shape is None:
            raise UsageError(
                f"{config.dataset} has images of varying size; pass --image-size."
            )
        config.image_size = max(info.image_shape[0], 32 if style == "imagenet" else 8)
    channels = 3
    one_hot = lambda x, y: (x, tf.one_hot(y, info.num_classes))  # noqa: E731
    train = data.make_dataset(
        train_ds, info.num_examples, config.batch_size, config.image_size, channels,
        style=style, training=True, seed=config.seed, epochs=config.epochs,
        initial_epoch=initial_epoch, mix=config.mix, randaugment=config.randaugment, num_classes=info.num_classes,
    )
    if not config.mix:
        train = train.map(one_hot)
    evaluation = data.make_dataset(
        eval_ds, eval_info.num_examples, config.batch_size, config.image_size, channels,
        style=style, training=False,
    ).map(one_hot)
    return train, evaluation, info, eval_info, channels


def train(config, extra_callbacks=()):
    """Runs (or resumes) a training run; returns the final metrics dict."""
    import keras

    from keras_cra import data
    from keras_cra.training.callbacks import RunState

    config = config.resolved()
    validate(config)
    initial_epoch = _prepare_out(config)
    strategy = get_strategy(config.strategy)
    configure_determinism(config.seed)
    if config.mixed_precision != "none":
        keras.config.set_dtype_policy(config.mixed_precision)

    train_ds, eval_ds, info, eval_info, channels = datasets(config, initial_epoch)
    steps = data.steps_per_epoch(info.num_examples, config.batch_size)
    out = config.out
    if not config.resume:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config) | {"num_classes": info.num_classes,
                                                    "class_names": info.class_names}, f, indent=2)
    with strategy.scope():
        if config.resume:
            model = keras.saving.load_model(os.path.join(out, "last.keras"))
        else:
            model = compile_model(build_model(config, info.num_classes, channels), config, steps)
    if initial_epoch >= config.epochs:
        raise UsageError(f"The run in {out} has finished all {config.epochs} epochs already.")
    prepare_for_multiworker(model, strategy, next(iter(train_ds)))
    if not is_chief():  # multi-worker: only the chief writes the run folder
        import tempfile

        out = tempfile.mkdtemp(prefix="keras_cra_worker_")

    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(out, "last.keras")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, "best.keras"), monitor="val_accuracy", mode="max",
            save_best_only=True,
        ),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=config.resume),
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        RunState(out),
    ]
    start = time.time()
    model.fit(
        train_ds,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        validation_data=eval_ds,
        callbacks=callbacks + list(extra_callbacks),
        verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles, deterministically per epoch
    )
    results = model.evaluate(eval_ds, return_dict=True, verbose=0)
    metrics = {
        "model": config.model,
        "attention": config.attention or "none",
        "dataset": config.dataset,
        "eval_split": config.eval_split,
        "eval_examples": eval_info.num_examples,
        "epochs": config.epochs,
        "top1": float(results["accuracy"]),
        "top5": float(results["top5"]),
        "loss": float(results["loss"]),
        "params": int(model.count_params()),
        "train_seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print_table(f"Final evaluation ({out})", metrics)
    return metrics


def main(argv=None):
    from keras_cra.training.common import run_cli

    return run_cli(lambda: train(config_from_args(build_parser().parse_args(argv))))
