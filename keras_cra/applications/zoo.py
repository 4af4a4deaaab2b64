"""The model zoo: one registry of every model family and variant.

Training, weights, conversion, export and the benchmarks read models from
here, never from a family's module. A family module (e.g. `resnet.py`)
registers each of its variants when `keras_cra.applications` is imported.

To add a family: write its builders in a new module of this package (the
`keras.applications` signature plus `attention` / `attention_kwargs`),
register one `ZooEntry` per variant there, and import the module in
`keras_cra/applications/__init__.py`.
"""

import dataclasses

from keras_cra.errors import ArgumentError

# Models whose input is smaller than this are trained and evaluated with the
# CIFAR-style pipeline (pad-and-crop, no resize); larger ones with the
# ImageNet-style pipeline (random resized crop; resize + center crop).
CIFAR_STYLE_MAX_SIZE = 63


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    Attributes:
        name: the public builder's name, e.g. `"CRAResNet50"`.
        builder: the public builder (`keras.applications` signature plus
            `attention` and `attention_kwargs`).
        style: `"imagenet"` or `"cifar"`: its training recipe and input
            pipeline.
        default_size: its default input size.
        min_size: the smallest input size it accepts.
    """

    name: str
    builder: object
    style: str
    default_size: int
    min_size: int


ZOO = {}


def register(entry):
    """Adds a model to the zoo (a name may be registered once)."""
    if entry.name in ZOO and ZOO[entry.name] != entry:
        raise ArgumentError(f"A model named {entry.name!r} is already registered. "
                         f"Received: name={entry.name!r}")
    ZOO[entry.name] = entry
    return entry


def names():
    """The registered model names, sorted."""
    return sorted(ZOO)


def get(name):
    """The `ZooEntry` of a model name, with a clear error for an unknown one."""
    if name not in ZOO:
        raise ArgumentError(f"Unknown model. Valid names: {names()}. Received: model_name={name!r}")
    return ZOO[name]


def get_model(model_name, **kwargs):
    """Builds a model by its name, e.g. `get_model("CRAResNet20", classes=10)`."""
    return get(model_name).builder(**kwargs)


def style_for_input(size):
    """The input pipeline style for a model whose input is `size` pixels high."""
    return "cifar" if size is not None and size <= CIFAR_STYLE_MAX_SIZE else "imagenet"
