"""Training with `model.fit`: the authors' recipes, checkpoints, exact resume."""

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time

from keras_cra.cli import check_output_dir, load_keras_model, read_json
from keras_cra.errors import ArgumentError
from keras_cra.files import PARTIAL, remove_stale_partials, write_json_atomic
from keras_cra.layers.registry import attention_choices
from keras_cra.training.common import (
    DEMO_MARKER,
    LOCK_FILE,
    UsageError,
    build_optimizer,
    configure_determinism,
    get_strategy,
    is_chief,
    prepare_for_multiworker,
    print_table,
    run_folder_lock,
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


def add_model_data_and_optimizer_args(p, skip=()):
    """The flags that training, fine-tuning and ablation share, except those in `skip`
    (destinations, e.g. `("attention", "seed")`)."""
    add = _adder(p, skip)
    add("--model", default="CRAResNet20", help="e.g. CRAResNet20, CRAResNet50")
    add("--attention", default="cra", choices=attention_choices())
    add("--dataset", default="fashion_mnist",
        help="a tfds name (fashion_mnist, cifar10, imagenette/320px, imagenet2012) or "
             "folder:/path")
    add("--train-split", default="train")
    add("--eval-split", default="test")
    add("--data-dir", default=None)
    add("--manual-dir", default=None)
    add("--image-size", type=int, default=None)
    add("--epochs", type=int, default=None)
    add("--batch-size", type=int, default=None, help="global batch size")
    add("--lr", type=float, default=None)
    add("--momentum", type=float, default=None)
    add("--warmup-epochs", type=float, default=0.0)
    add("--weight-decay", type=float, default=None)
    add("--label-smoothing", type=float, default=0.0)
    add("--mix", default=None, choices=["mixup", "cutmix"])
    add("--randaugment", action="store_true")
    add("--seed", type=int, default=0)
    add("--out", default="runs/default", help="run folder")
    add("--jit-compile", action="store_true")
    add("--verbose", type=int, default=None, choices=[0, 1, 2],
        help="0 silent, 1 a progress bar per step, 2 one line per epoch "
             "(default: 1 in a terminal, else 2)")


def _adder(parser, skip):
    def add(flag, *args, **kwargs):
        if flag.lstrip("-").replace("-", "_") not in skip:
            parser.add_argument(flag, *args, **kwargs)

    return add


def build_parser():
    p = argparse.ArgumentParser(description="Train a CRA model with model.fit.")
    add_model_data_and_optimizer_args(p)
    p.add_argument("--schedule", default="step", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", default=None)
    p.add_argument("--mixed-precision", default="none",
                   choices=["none", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--strategy", default="auto", choices=["auto", "mirrored", "multiworker"])
    p.add_argument("--resume", action="store_true", help="resume the run in --out")
    return p


def progress_verbosity(verbose=None):
    """Keras' `verbose`: as given, else a progress bar in a terminal and one line per epoch
    in a log file or pipe."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def config_from_args(args, config_class=None):
    """A config from parsed flags; fields without a flag keep their defaults."""
    config_class = config_class or TrainConfig
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
              if hasattr(args, f.name)}
    values["verbose"] = progress_verbosity(values.get("verbose"))
    config = config_class(**values)
    milestones = values.get("milestones")
    if milestones:  # given as a flag: within the run's epochs (the recipe's, if not given)
        epochs = config.resolved().epochs
        if isinstance(epochs, int) and any(isinstance(m, int) and m > epochs for m in milestones):
            raise UsageError(f"--milestones must be within --epochs ({epochs}). "
                             f"Received: --milestones {' '.join(map(str, milestones))}")
    return config


def _finite(name, value, low=None, high=None, low_open=False, high_open=True):
    """Checks a float flag: finite and in range; the error names the flag."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number. Received: {flag} {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(f"{flag} must be {'>' if low_open else '>='} {low}. "
                         f"Received: {flag} {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(f"{flag} must be {'<' if high_open else '<='} {high}. "
                         f"Received: {flag} {value}")


# Bounds of what the code can do, checked before any work (each message states its bound).
MAX_SEED = 2**31 - 1        # TensorFlow's stateless seeds are int32
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIZE = 1024       # a 1024x1024 batch of 8 already needs several GB for ResNet-50


# A ResNet's activations (kept for the backward pass) take about this many times the bytes
# of its float32 input batch; a batch whose estimate exceeds the machine's memory is refused.
ACTIVATION_FACTOR = 100


def check_memory(batch_size, image_size, channels=3):
    """Refuses `--batch-size` x `--image-size` that cannot fit in this machine's memory."""
    need = batch_size * image_size * image_size * channels * 4 * ACTIVATION_FACTOR
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise UsageError(
            f"--batch-size {batch_size} at --image-size {image_size} needs about "
            f"{need / 2**30:.0f} GiB for the activations, more than this machine's "
            f"{have / 2**30:.0f} GiB; lower either.")


def check_int(flag, value, low=1, high=None):
    """An integer flag in `[low, high]`; the error names the flag and the bound."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"{flag} must be an integer {bound}. Received: {flag} {value}")


def validate(config):
    """Checks every setting of a resolved config; errors name the flag."""
    c = config
    for key, high in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE),
                      ("image_size", MAX_IMAGE_SIZE)):
        if getattr(c, key) is not None:
            check_int(f"--{key.replace('_', '-')}", getattr(c, key), 1, high)
    check_int("--seed", c.seed, 0, MAX_SEED)
    if c.lr is not None:
        _finite("lr", c.lr, low=0, low_open=True)
    if c.momentum is not None:
        _finite("momentum", c.momentum, low=0, high=1)
    if c.weight_decay is not None:
        _finite("weight_decay", c.weight_decay, low=0, high=1)
    _finite("label_smoothing", c.label_smoothing, low=0, high=1)
    _finite("warmup_epochs", c.warmup_epochs, low=0)
    if c.epochs is not None and c.warmup_epochs >= c.epochs and c.warmup_epochs > 0:
        raise UsageError(
            f"--warmup-epochs ({c.warmup_epochs}) must be shorter than --epochs ({c.epochs})."
        )
    if c.milestones is not None:
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 or m > MAX_EPOCHS
               for m in c.milestones) or list(c.milestones) != sorted(set(c.milestones)):
            raise UsageError(f"--milestones must be increasing epochs between 1 and "
                             f"{MAX_EPOCHS}. "
                             f"Received: --milestones {' '.join(map(str, c.milestones))}")
    choices = {"schedule": ("step", "cosine"), "mix": (None, "mixup", "cutmix"),
               "mixed_precision": ("none", "mixed_float16", "mixed_bfloat16"),
               "strategy": ("auto", "mirrored", "multiworker"), "verbose": (0, 1, 2)}
    for key, allowed in choices.items():
        if getattr(c, key) not in allowed:
            raise UsageError(f"--{key.replace('_', '-')} must be one of {list(allowed)}. "
                             f"Received: --{key.replace('_', '-')} {getattr(c, key)}")
    check_attention(c.attention)


def check_attention(attention, flag="--attention"):
    """A registered attention name, `"none"` or `None`; the error names the flag."""
    from keras_cra.layers.registry import ATTENTIONS

    if attention not in (None, "none") and attention not in ATTENTIONS:
        raise UsageError(f"{flag} must be one of {attention_choices()}. "
                         f"Received: {flag} {attention}")


# Files a run folder holds; a folder holding anything else is never replaced.
# (predictions.png: a training/detect.py run's picture.)
PREDICTIONS_PNG = "predictions.png"
RUN_FILES = {"config.json", "state.json", "last.keras", "best.keras", "history.csv",
             "metrics.json", "logs", PREDICTIONS_PNG, LOCK_FILE, DEMO_MARKER}
# Settings that `--resume` may change; every other difference is an error.
RESUME_MAY_CHANGE = ("out", "resume", "verbose", "data_dir", "manual_dir", "strategy",
                     "jit_compile")


def _transient(name):
    """A temporary file or lock that one of our writers leaves when it is killed."""
    return name.startswith(".") and (PARTIAL in name or name.endswith(".lock"))


def _run_contents(out):
    if not os.path.isdir(out):
        return set()
    return {n for n in os.listdir(out) if not _transient(n)} - {LOCK_FILE, DEMO_MARKER}


def _is_unfinished(out):
    """A run folder whose first epoch never finished (e.g. a bad flag or a NaN loss stopped it)."""
    contents = _run_contents(out)
    return ("config.json" in contents and not {"state.json", "last.keras"} & contents
            and contents <= RUN_FILES)


def resume_differences(config, saved):
    """The settings of `config` that differ from a run's saved `config.json`.

    `None` means unset (keep the run's value).
    """
    return [f"--{k.replace('_', '-')} {getattr(config, k)!r} (the run has {saved.get(k)!r})"
            for k in (f.name for f in dataclasses.fields(config))
            if k not in RESUME_MAY_CHANGE and k in saved and getattr(config, k) is not None
            and _json_value(getattr(config, k)) != saved[k]]


def _json_value(value):
    return json.loads(json.dumps(value))


def _prepare_out(config):
    """Checks the run folder (under the caller's lock).

    Returns:
        `(first epoch to run, best val_accuracy so far or None)`.
    """
    out = config.out
    for name in ("last.keras", "best.keras", "state.json", "metrics.json", "config.json"):
        remove_stale_partials(os.path.join(out, name))  # left by a kill -9
    if config.resume:
        config_path = os.path.join(out, "config.json")
        if not os.path.exists(config_path):
            raise UsageError(f"Cannot resume: {out} holds no run (no config.json).")
        if _is_unfinished(out):
            raise UsageError(
                f"Cannot resume: no epoch of the run in {out} finished. Start it again "
                "without --resume (the unfinished run is replaced)."
            )
        saved = read_json(config_path, "The run's config.json")
        if not os.path.exists(os.path.join(out, "last.keras")):
            raise UsageError(f"Cannot resume: no checkpoint {os.path.join(out, 'last.keras')}.")
        state_path = os.path.join(out, "state.json")
        # No state.json beside a checkpoint: the state write of a finished epoch failed (a
        # full disk, a kill between the two writes); the checkpoint tells the epoch.
        state = (read_json(state_path, "The run's state.json") if os.path.exists(state_path)
                 else {"epochs_done": None})
        differences = resume_differences(config, saved)
        if differences:
            raise UsageError(
                f"Cannot resume the run in {out} with other settings: "
                + "; ".join(differences)
                + ". Leave them out to keep the run's settings."
            )
        if state["epochs_done"] is not None and not isinstance(state["epochs_done"], int):
            raise UsageError(f"The run's state.json has no epochs_done: {out}.")
        return state["epochs_done"], (state.get("best") or {}).get("val_accuracy")
    if _is_unfinished(out):
        for name in _run_contents(out) | {n for n in os.listdir(out) if _transient(n)
                                          and n != LOCK_FILE}:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif _run_contents(out):
        raise UsageError(
            f"{out} already holds a run (or other files); choose another --out, or pass "
            "--resume to continue it. Nothing was overwritten."
        )
    return 0, None


def checkpoint_epochs(path, steps):
    """How many epochs of `steps` steps the optimizer of a `.keras` checkpoint has run
    (read from the file without building the model)."""
    import zipfile

    import h5py
    import numpy as np

    try:
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f:
            with h5py.File(f, "r") as h5:
                iterations = None

                def find(name, obj):
                    nonlocal iterations
                    if iterations is None and name.startswith("optimizer/") and isinstance(
                            obj, h5py.Dataset) and obj.shape == () and "int" in str(obj.dtype):
                        iterations = int(np.asarray(obj))

                h5.visititems(find)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"Cannot resume: the run's last.keras is not a readable .keras model "
                         f"(truncated, corrupt or not a model: {type(e).__name__}). "
                         f"Received: {path}") from e
    if iterations is None or iterations % steps:
        raise UsageError(
            f"Cannot resume: the run's checkpoint {path} ends inside an epoch (optimizer step "
            f"{iterations}, {steps} steps per epoch); it was not written by this run.")
    return iterations // steps


def history_best(out, epochs, monitor="val_accuracy"):
    """The best `monitor` value in the first `epochs` rows of the run's `history.csv`."""
    import csv

    try:
        with open(os.path.join(out, "history.csv")) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    values = [float(r[monitor]) for r in rows if r.get(monitor) not in (None, "")
              and r.get("epoch", "").isdigit() and int(r["epoch"]) < epochs]
    return max(values, default=None)


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


def datasets(config, initial_epoch=0):
    """Train (from `initial_epoch` on) and eval pipelines, one-hot labels."""
    import tensorflow as tf

    from keras_cra import data
    from keras_cra.applications import zoo

    style = zoo.get(config.model).style
    train_ds, info = data.load(config.dataset, config.train_split, config.data_dir, config.manual_dir)
    eval_ds, eval_info = data.load(config.dataset, config.eval_split, config.data_dir, config.manual_dir)
    if config.image_size is None:
        if info.image_shape is None:
            raise UsageError(
                f"{config.dataset} has images of varying size; pass --image-size."
            )
        config.image_size = max(info.image_shape[0], 32 if style == "imagenet" else 8)
    channels = 3
    check_memory(config.batch_size, config.image_size, channels)
    if config.batch_size > info.num_examples:
        raise UsageError(f"--batch-size must be at most the training split's "
                         f"{info.num_examples} examples. Received: --batch-size "
                         f"{config.batch_size} (--train-split {config.train_split})")
    one_hot = lambda x, y: (x, tf.one_hot(y, info.num_classes))  # noqa: E731
    train = data.make_dataset(
        train_ds, info.num_examples, config.batch_size, config.image_size, channels,
        style=style, training=True, seed=config.seed, epochs=config.epochs,
        initial_epoch=initial_epoch, mix=config.mix, randaugment=config.randaugment, num_classes=info.num_classes,
    )
    if not config.mix:
        train = train.map(one_hot)
    evaluation = data.make_dataset(
        eval_ds, eval_info.num_examples, min(config.batch_size, eval_info.num_examples),
        config.image_size, channels,
        style=style, training=False,
    ).map(one_hot)
    return train, evaluation, info, eval_info, channels


def train(config, extra_callbacks=()):
    """Runs (or resumes) a training run; returns the final metrics dict.

    The run folder `config.out` is locked while the run goes on (a second
    training on it is refused). A new run goes into a missing or empty
    folder, a demo folder, or a folder whose earlier run never finished an
    epoch (that run is replaced); `resume=True` continues a run with the
    settings of its `config.json` (any other difference is an error, except
    `RESUME_MAY_CHANGE`).
    """
    config = config.resolved()
    validate(config)
    check_output_dir(config.out)
    with run_folder_lock(config.out):
        initial_epoch, best = _prepare_out(config)
        return _train(config, initial_epoch, best, extra_callbacks)


def _train(config, initial_epoch, best, extra_callbacks):
    import keras

    import keras_cra.training.schedules  # noqa: F401 (registers EpochSchedule for --resume)
    from keras_cra import data
    from keras_cra.training.callbacks import AtomicCheckpoint, RunState, StopOnNaN

    strategy = get_strategy(config.strategy)
    configure_determinism(config.seed)
    train_ds, eval_ds, info, eval_info, channels = datasets(config, initial_epoch or 0)
    steps = data.steps_per_epoch(info.num_examples, config.batch_size)
    out = config.out
    if config.resume:
        done = checkpoint_epochs(os.path.join(out, "last.keras"), steps)
        if done != initial_epoch:
            # state.json is one epoch behind last.keras (or missing): the checkpoint wins.
            initial_epoch, best = done, max(filter(None, [best, history_best(out, done)]),
                                            default=None)
            write_json_atomic(os.path.join(out, "state.json"),
                              {"epochs_done": done, "best": {"val_accuracy": best}})
            train_ds, eval_ds, info, eval_info, channels = datasets(config, initial_epoch)
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


def given_flags(parser, argv):
    """The destinations of the flags that `argv` gives explicitly."""
    import copy

    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(quiet.parse_args(argv)))


def config_for_resume(args, given, config_class=None):
    """With `--resume`, the run's saved settings, overridden by the flags given."""
    config_class = config_class or TrainConfig
    path = os.path.join(args.out, "config.json")
    saved = read_json(path, "The run's config.json") if os.path.exists(path) else {}
    names = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in saved.items() if k in names}
    values.update({k: getattr(args, k) for k in names if k in given or k not in values})
    values["verbose"] = progress_verbosity(getattr(args, "verbose", None))
    return config_class(**values)


def main(argv=None):
    from keras_cra.training.common import run_cli

    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        if args.resume:
            config = config_for_resume(args, given_flags(parser, argv))
        else:
            config = config_from_args(args)
        print_table(f"Final evaluation ({config.out})", train(config))

    return run_cli(command, out=lambda: args.out)


if __name__ == "__main__":
    import sys

    sys.exit(main())
