"""The settings every training command shares: one config base, its flags, its checks.

`RunConfig` holds the fields of a run that train, finetune, detect and ablate
all have; each command's config subclasses it (changing defaults where its
recipe differs) and adds its own. The shared flags are made from the config
class (`add_run_args`: defaults from its fields, choices from `CHOICES`), and
`validate_run` checks them with the same bounds and choices, so each is
declared once.
"""

import argparse
import dataclasses
import math
import os
import sys

from keras_cra.errors import UsageError, flag, option, received  # noqa: F401 (re-exported)

# Bounds of what the code can do, checked before any work (each message states its bound).
MAX_SEED = 2**31 - 1        # TensorFlow's stateless seeds are int32
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_IMAGE_SIZE = 1024       # a 1024x1024 batch of 8 already needs several GB for ResNet-50

# A ResNet's activations (kept for the backward pass) take about this many times the bytes
# of its float32 input batch; a batch whose estimate exceeds the machine's memory is refused.
ACTIVATION_FACTOR = 100

# The allowed values of the choice settings (flags and config checks read them from here).
CHOICES = {
    "schedule": ("step", "cosine"),
    "mix": (None, "mixup", "cutmix"),
    "mixed_precision": ("none", "mixed_float16", "mixed_bfloat16"),
    "strategy": ("auto", "mirrored", "multiworker"),
    "verbose": (0, 1, 2),
}


@dataclasses.dataclass
class RunConfig:
    """The settings of a run folder that every training command has."""

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
    warmup_epochs: float = 0.0
    seed: int = 0
    out: str = "runs/default"
    resume: bool = False
    verbose: int = 1


# The shared flags' help texts (destination -> help).
HELP = {
    "attention": None,
    "dataset": "a tfds name (fashion_mnist, cifar10, imagenette/320px, imagenet2012) or "
               "folder:/path",
    "batch_size": "global batch size",
    "out": "run folder",
    "resume": "resume the run in --out",
    "verbose": "0 silent, 1 a progress bar per step, 2 one line per epoch "
               "(default: 1 in a terminal, else 2)",
}
_TYPES = {"image_size": int, "epochs": int, "batch_size": int, "lr": float,
          "warmup_epochs": float, "seed": int}


def add_run_args(parser, config_class=RunConfig, skip=(), helps=None):
    """Adds the `RunConfig` flags to `parser`, with the defaults of `config_class`, except
    the destinations in `skip`. (`--verbose` defaults to `None`: see `progress_verbosity`.)"""
    from keras_cra.layers.registry import attention_choices

    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    helps = dict(HELP, **(helps or {}))
    for field in dataclasses.fields(RunConfig):
        name = field.name
        if name in skip:
            continue
        kwargs = {"help": helps.get(name)}
        if name == "resume":
            kwargs["action"] = "store_true"
        elif name == "verbose":
            kwargs.update(type=int, default=None, choices=list(CHOICES["verbose"]))
        else:
            kwargs["default"] = defaults[name]
            if name in _TYPES:
                kwargs["type"] = _TYPES[name]
            if name == "attention":
                kwargs["choices"] = attention_choices()
        parser.add_argument(option(name), **kwargs)


def add_choice_arg(parser, name, default):
    """A flag whose values are `CHOICES[name]`."""
    parser.add_argument(option(name), default=default,
                        choices=[c for c in CHOICES[name] if c is not None])


def progress_verbosity(verbose=None):
    """Keras' `verbose`: as given, else a progress bar in a terminal and one line per epoch
    in a log file or pipe."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def config_from_args(args, config_class):
    """A config from parsed flags; fields without a flag keep their defaults."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
              if hasattr(args, f.name)}
    values["verbose"] = progress_verbosity(values.get("verbose"))
    return config_class(**values)


def check_finite(name, value, low=None, high=None, low_open=False, high_open=True):
    """Checks a float setting: finite and in range; the error names the flag."""
    f = flag(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{f} must be a finite number. {received(name, value)}")
    if low is not None and (value < low or (low_open and value == low)):
        raise UsageError(f"{f} must be {'>' if low_open else '>='} {low}. "
                         f"{received(name, value)}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UsageError(f"{f} must be {'<' if high_open else '<='} {high}. "
                         f"{received(name, value)}")


def check_int(name, value, low=1, high=None):
    """An integer setting in `[low, high]`; the error names it (see `flag`) and the bound."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise UsageError(f"{flag(name)} must be an integer {bound}. {received(name, value)}")


def check_memory(batch_size, image_size, channels=3):
    """Refuses `--batch-size` x `--image-size` that cannot fit in this machine's memory."""
    need = batch_size * image_size * image_size * channels * 4 * ACTIVATION_FACTOR
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise UsageError(
            f"{flag('batch_size')} {batch_size} at {flag('image_size')} {image_size} needs about "
            f"{need / 2**30:.0f} GiB for the activations, more than this machine's "
            f"{have / 2**30:.0f} GiB; lower either.")


def check_attention(attention, name="attention"):
    """A registered attention name, `"none"` or `None`; the error names the setting."""
    from keras_cra.layers.registry import ATTENTIONS, attention_choices

    if attention not in (None, "none") and attention not in ATTENTIONS:
        raise UsageError(f"{flag(name)} must be one of {attention_choices()}. "
                         f"{received(name, attention)}")


def check_choices(config):
    """Every `CHOICES` setting that `config` has holds an allowed value."""
    for name, allowed in CHOICES.items():
        if hasattr(config, name) and getattr(config, name) not in allowed:
            raise UsageError(f"{flag(name)} must be one of {list(allowed)}. "
                             f"{received(name, getattr(config, name))}")


def validate_run(config, image_size_high=MAX_IMAGE_SIZE):
    """Checks the `RunConfig` settings of a (resolved) config; errors name each setting
    (as a flag inside `naming_flags()`)."""
    c = config
    for key, high in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE),
                      ("image_size", image_size_high)):
        if getattr(c, key) is not None:
            check_int(key, getattr(c, key), 1, high)
    check_int("seed", c.seed, 0, MAX_SEED)
    if c.lr is not None:
        check_finite("lr", c.lr, low=0, low_open=True)
    check_finite("warmup_epochs", c.warmup_epochs, low=0)
    if c.epochs is not None and c.warmup_epochs >= c.epochs and c.warmup_epochs > 0:
        raise UsageError(
            f"{flag('warmup_epochs')} ({c.warmup_epochs}) must be shorter than "
            f"{flag('epochs')} ({c.epochs}).")
    check_choices(c)
    check_attention(c.attention)


def given_flags(parser, argv):
    """The destinations of the flags that `argv` gives explicitly. (argparse fills in a
    default only where the namespace it is given has no value: a namespace holding a marker
    for every destination keeps the marker wherever `argv` is silent.)"""
    marker = object()
    destinations = vars(parser.parse_args(argv))
    parsed = parser.parse_args(argv, namespace=argparse.Namespace(
        **{d: marker for d in destinations}))
    return {d for d, value in vars(parsed).items() if value is not marker}
