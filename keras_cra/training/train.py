"""Training with `model.fit`: the authors' recipes, checkpoints, exact resume."""

import argparse
import collections
import dataclasses
import os
import time

from keras_cra.cli import check_output_dir, load_keras_model
from keras_cra.errors import ArgumentError
from keras_cra.files import write_json_atomic
from keras_cra.training import run_folder
from keras_cra.training.common import (
    UsageError,
    build_optimizer,
    configure_determinism,
    get_strategy,
    is_chief,
    prepare_for_multiworker,
    print_table,
)
from keras_cra.training.config import (
    MAX_EPOCHS,
    RunConfig,
    add_choice_arg,
    add_run_args,
    check_finite,
    check_memory,
    config_from_args,
    flag,
    given_flags,
    received,
    validate_run,
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
class TrainConfig(RunConfig):
    """A classifier's training run (`RunConfig`'s settings, the model and its recipe)."""

    model: str = "CRAResNet20"
    momentum: float | None = None
    schedule: str = "step"
    milestones: list | None = None
    weight_decay: float | None = None
    label_smoothing: float = 0.0
    mixed_precision: str = "none"
    mix: str | None = None
    randaugment: bool = False
    strategy: str = "auto"
    jit_compile: bool = False

    def resolved(self):
        """Fill unset hyper-parameters from the model's recipe."""
        from keras_cra.applications import zoo

        if self.model not in zoo.ZOO:
            raise UsageError(
                f"Unknown model. Valid names: {zoo.names()}. Received: --model {self.model}"
            )
        recipe = RECIPES[zoo.get(self.model).style]
        out = dataclasses.replace(self)
        for key in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "image_size"):
            if getattr(out, key) is None:
                setattr(out, key, recipe[key])
        if out.milestones is None:
            out.milestones = list(recipe["milestones"])
        out.attention = None if out.attention in (None, "none") else out.attention
        return out


def add_train_args(p, config_class=None, skip=()):
    """The flags that training, fine-tuning and ablation share (`RunConfig`'s and the
    model's and optimizer's), except the destinations in `skip`; defaults from
    `config_class` (default `TrainConfig`)."""
    config_class = config_class or TrainConfig
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    add_run_args(p, config_class, skip=set(skip) | {"resume"})
    if "model" not in skip:
        p.add_argument("--model", default=defaults["model"], help="e.g. CRAResNet20, CRAResNet50")
    p.add_argument("--momentum", type=float, default=defaults["momentum"])
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    p.add_argument("--label-smoothing", type=float, default=defaults["label_smoothing"])
    add_choice_arg(p, "mix", defaults["mix"])
    p.add_argument("--randaugment", action="store_true")
    p.add_argument("--jit-compile", action="store_true")


def build_parser():
    p = argparse.ArgumentParser(description="Train a CRA model with model.fit.")
    add_train_args(p)
    add_choice_arg(p, "schedule", "step")
    p.add_argument("--milestones", type=int, nargs="*", default=None)
    add_choice_arg(p, "mixed_precision", "none")
    add_choice_arg(p, "strategy", "auto")
    p.add_argument("--resume", action="store_true", help="resume the run in --out")
    return p


def check_milestones(config):
    """Milestones given as a flag lie within the run's epochs (the recipe's, if not given)."""
    milestones = config.milestones
    if milestones:
        epochs = config.resolved().epochs
        if isinstance(epochs, int) and any(isinstance(m, int) and m > epochs for m in milestones):
            raise UsageError(f"{flag('milestones')} must be within {flag('epochs')} ({epochs}). "
                             f"{received('milestones', milestones)}")
    return config


def validate(config):
    """Checks every setting of a resolved config; errors name the flag."""
    c = config
    validate_run(c)
    if c.momentum is not None:
        check_finite("momentum", c.momentum, low=0, high=1)
    if c.weight_decay is not None:
        check_finite("weight_decay", c.weight_decay, low=0, high=1)
    check_finite("label_smoothing", c.label_smoothing, low=0, high=1)
    if c.milestones is not None:
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 or m > MAX_EPOCHS
               for m in c.milestones) or list(c.milestones) != sorted(set(c.milestones)):
            raise UsageError(f"{flag('milestones')} must be increasing epochs between 1 and "
                             f"{MAX_EPOCHS}. {received('milestones', c.milestones)}")


def build_model(config, num_classes, channels):
    from keras_cra.applications import zoo

    try:
        return zoo.get_model(
            config.model,
            weights=None,
            classes=num_classes,
            input_shape=(config.image_size, config.image_size, channels),
            attention=config.attention,
            classifier_activation=None,
        )
    except ArgumentError as e:  # the builder's own argument errors, with the model's name
        raise UsageError(f"Cannot build {config.model}: {e}") from e


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
    return build_optimizer(model)


class Data(collections.namedtuple(
        "Data", "train evaluation info eval_info channels image_size")):
    """What `datasets` returns: the pipelines, the splits' infos, and the input channels
    and image size it decided (the image size is `config.image_size` if set)."""


def datasets(config, initial_epoch=0):
    """Train (from `initial_epoch` on) and eval pipelines, one-hot labels, as `Data`."""
    import tensorflow as tf

    from keras_cra import data
    from keras_cra.applications import zoo

    style = zoo.get(config.model).style
    train_ds, info = data.load(config.dataset, config.train_split, config.data_dir, config.manual_dir)
    eval_ds, eval_info = data.load(config.dataset, config.eval_split, config.data_dir, config.manual_dir)
    image_size = config.image_size
    if image_size is None:
        if info.image_shape is None:
            raise UsageError(
                f"{config.dataset} has images of varying size; pass --image-size."
            )
        image_size = max(info.image_shape[0], 32 if style == "imagenet" else 8)
    channels = 3
    check_memory(config.batch_size, image_size, channels)
    if config.batch_size > info.num_examples:
        raise UsageError(f"{flag('batch_size')} must be at most the training split's "
                         f"{info.num_examples} examples ({flag('train_split')} "
                         f"{config.train_split}). {received('batch_size', config.batch_size)}")
    one_hot = lambda x, y: (x, tf.one_hot(y, info.num_classes))  # noqa: E731
    train = data.make_dataset(
        train_ds, info.num_examples, config.batch_size, image_size, channels,
        style=style, training=True, seed=config.seed, epochs=config.epochs,
        initial_epoch=initial_epoch, mix=config.mix, randaugment=config.randaugment, num_classes=info.num_classes,
    )
    if not config.mix:
        train = train.map(one_hot)
    evaluation = data.make_dataset(
        eval_ds, eval_info.num_examples, min(config.batch_size, eval_info.num_examples),
        image_size, channels,
        style=style, training=False,
    ).map(one_hot)
    return Data(train, evaluation, info, eval_info, channels, image_size)


def train(config, extra_callbacks=()):
    """Runs (or resumes) a training run; returns the final metrics dict.

    The run folder `config.out` is locked while the run goes on (a second
    training on it is refused). A new run goes into a missing or empty
    folder, a demo folder, or a folder whose earlier run never finished an
    epoch (that run is replaced); `resume=True` continues a run with the
    settings of its `config.json` (any other difference is an error, except
    `run_folder.RESUME_MAY_CHANGE`).
    """
    config = config.resolved()
    validate(config)
    check_output_dir(config.out)
    with run_folder.lock(config.out):
        initial_epoch, best = run_folder.prepare(config)
        return _train(config, initial_epoch, best, extra_callbacks)


def _train(config, initial_epoch, best, extra_callbacks):
    import keras

    import keras_cra.training.schedules  # noqa: F401 (registers EpochSchedule for --resume)
    from keras_cra import data
    from keras_cra.training.callbacks import AtomicCheckpoint, RunState, StopOnNaN, fit

    strategy = get_strategy(config.strategy)
    configure_determinism(config.seed)
    train_ds, eval_ds, info, eval_info, channels, image_size = datasets(config,
                                                                        initial_epoch or 0)
    config = dataclasses.replace(config, image_size=image_size)
    steps = data.steps_per_epoch(info.num_examples, config.batch_size)
    out = config.out
    if config.resume:
        done = run_folder.checkpoint_epochs(os.path.join(out, "last.keras"), steps)
        if done != initial_epoch:
            # state.json is one epoch behind last.keras (or missing): the checkpoint wins.
            initial_epoch, best = done, max(
                filter(None, [best, run_folder.history_best(out, done)]), default=None)
            write_json_atomic(os.path.join(out, "state.json"),
                              {"epochs_done": done, "best": {"val_accuracy": best}})
            train_ds, eval_ds, info, eval_info, channels, _ = datasets(config, initial_epoch)
    if initial_epoch >= config.epochs and os.path.exists(os.path.join(out, "metrics.json")):
        raise UsageError(f"The run in {out} has finished all {config.epochs} epochs already.")
    # (All epochs done but no metrics.json: the run was stopped before its final
    # evaluation; `fit` then trains nothing and the evaluation below finishes it.)
    if not config.resume:
        write_json_atomic(os.path.join(out, "config.json"), dataclasses.asdict(config) | {
            "num_classes": info.num_classes, "class_names": info.class_names})
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision != "none":
        keras.config.set_dtype_policy(config.mixed_precision)
    try:
        with strategy.scope():
            if config.resume:
                model = load_keras_model(os.path.join(out, "last.keras"), "the run's last.keras",
                                         compile=True)
            else:
                model = compile_model(build_model(config, info.num_classes, channels), config,
                                      steps)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if initial_epoch < config.epochs:  # (else a stopped run is only evaluated)
        prepare_for_multiworker(model, strategy, next(iter(train_ds)))
    if not is_chief():  # multi-worker: only the chief writes the run folder
        import tempfile

        out = tempfile.mkdtemp(prefix="keras_cra_worker_")

    stopper = StopOnNaN()
    callbacks = [
        stopper,
        AtomicCheckpoint(os.path.join(out, "last.keras")),
        AtomicCheckpoint(os.path.join(out, "best.keras"), monitor="val_accuracy", best=best),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=config.resume),
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        RunState(out, best=best),
    ]
    start = time.time()
    fit(
        model,
        callbacks + list(extra_callbacks),
        x=train_ds,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        validation_data=eval_ds,
        verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles, deterministically per epoch
    )
    if stopper.diverged_at is not None:
        epoch, step = stopper.diverged_at
        raise UsageError(
            f"Training stopped: the loss became NaN or infinite at epoch {epoch + 1}, step "
            f"{step + 1} (--lr {config.lr}, --weight-decay {config.weight_decay}). Lower --lr "
            f"(or --weight-decay) or check the data. The checkpoints in "
            f"{out} are those of the last epoch that finished."
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
    write_json_atomic(os.path.join(out, "metrics.json"), metrics)
    return metrics


def main(argv=None):
    from keras_cra.training.common import run_cli

    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        if args.resume:
            config = run_folder.config_for_resume(args, given_flags(parser, argv), TrainConfig)
        else:
            config = check_milestones(config_from_args(args, TrainConfig))
        print_table(f"Final evaluation ({config.out})", train(config))

    return run_cli(command, out=lambda: args.out)


if __name__ == "__main__":
    import sys

    sys.exit(main())
