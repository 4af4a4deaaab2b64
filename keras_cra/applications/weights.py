"""Registry of pretrained weights, and loading of weights files.

Each entry maps a weights name (for a model) to the file name in the Keras
cache (`$KERAS_HOME/models`, default `~/.keras/models`), the origin URL it is
downloaded from (through `keras.utils.get_file`), and its sha256. Entries
without a public origin are installed into the cache by the converter
(`python -m keras_cra.convert ... --install`); until then, asking for them
raises an error saying how to get them. There is never a silent fallback to
random weights.
"""

import dataclasses
import os
import shutil
import warnings

import keras

from keras_cra.errors import ArgumentError, UsageError
from keras_cra.files import sha256_of


class WeightsNotFoundError(UsageError, FileNotFoundError):
    """Registered weights that are neither in the Keras cache nor downloadable."""


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    name: str
    model_name: str
    file_name: str
    origin: str | None
    sha256: str | None
    attention: str | None
    description: str
    how_to_get: str
    classes: int = 1000
    input_shape: tuple | None = None  # the builder's default input shape with these weights
    class_names: tuple = ()
    packaged: bool = False  # the file ships inside keras_cra (applications/data/)


# Files shipped with the package (keras_cra/applications/data/).
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# The shipped file's sha256, and its top-1 on the 10,000 test images (tests check both).
FASHION_MNIST_SHA256 = "64fddcb7f30c84acb7655b4900c99bc12afa6f1b18099394a5a38510368427f2"
FASHION_MNIST_ACCURACY = "91.00%"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_RECIPE = (
    "CRAResNet20 trained from scratch on the 60,000 Fashion-MNIST training images "
    "(`keras-cra train --model CRAResNet20 --dataset fashion_mnist --epochs 5 "
    "--batch-size 128 --lr 0.1 --schedule cosine --warmup-epochs 0.5 --seed 0`: SGD "
    "momentum 0.9, weight decay 1e-4, pad-4 crop + flip); inputs 28x28 RGB (the gray "
    "image in all three channels), `preprocess_input` (\"torch\" mode)")


_AUTHORS_STEPS = (
    "1. Download the CRA authors' ImageNet checkpoint `best_model.pkl` (linked "
    "from runs/cra_imagenet/1/README.md in their repository).\n"
    "2. Convert and install it into the Keras cache (no PyTorch needed):\n"
    "   keras-cra convert best_model.pkl --model CRAResNet50 --install imagenet"
)


def _torchvision_steps(model_name, tv_name):
    return (
        f"1. Download torchvision's ImageNet weights for `{tv_name}` (e.g. "
        f"`torchvision.models.{tv_name}(weights='DEFAULT').state_dict()` saved "
        "with torch.save, or the .pth file from the torchvision model zoo).\n"
        "2. Convert and install them into the Keras cache (no PyTorch needed):\n"
        f"   keras-cra convert {tv_name}.pth --format torchvision "
        f"--model {model_name} --install torchvision"
    )


TORCHVISION_NAMES = {
    "CRAResNet18": "resnet18",
    "CRAResNet34": "resnet34",
    "CRAResNet50": "resnet50",
    "CRAResNet101": "resnet101",
    "CRAResNet152": "resnet152",
    "CRAResNeXt50": "resnext50_32x4d",
    "CRAResNeXt101": "resnext101_32x4d",
}

_ENTRIES = [
    WeightsEntry(
        name="imagenet",
        model_name="CRAResNet50",
        file_name="cra_resnet50_imagenet.weights.h5",
        origin=None,
        sha256=None,
        attention="cra",
        description="The CRA authors' ImageNet-1k CRA-ResNet-50 (22.77% top-1 error).",
        how_to_get=_AUTHORS_STEPS,
    ),
] + [
    WeightsEntry(
        name="torchvision",
        model_name=model_name,
        file_name=f"{tv_name}_torchvision.weights.h5",
        origin=None,
        sha256=None,
        attention=None,
        description=(
            f"torchvision's ImageNet {tv_name} backbone; attention layers keep "
            "their initialisation."
        ),
        how_to_get=_torchvision_steps(model_name, tv_name),
    )
    for model_name, tv_name in TORCHVISION_NAMES.items()
]

_ENTRIES.append(WeightsEntry(
    name="fashion_mnist",
    model_name="CRAResNet20",
    file_name="cra_resnet20_fashion_mnist.weights.h5",
    origin=None,
    sha256=FASHION_MNIST_SHA256,
    attention="cra",
    description=f"{FASHION_MNIST_RECIPE}; {FASHION_MNIST_ACCURACY} top-1 on the 10,000 test images.",
    how_to_get="It ships with keras_cra; reinstall the package if it is missing.",
    classes=10,
    input_shape=(28, 28, 3),
    class_names=FASHION_MNIST_CLASSES,
    packaged=True,
))

WEIGHTS = {(e.model_name, e.name): e for e in _ENTRIES}


def packaged_entry(name):
    """The registry entry of weights named `name` that ship with the package, or `None`."""
    found = [e for e in WEIGHTS.values() if e.name == name and e.packaged]
    return found[0] if len(found) == 1 else None


def packaged_names():
    return sorted(e.name for e in WEIGHTS.values() if e.packaged)


def defaults_for(weights, model_name, classes, input_shape, input_tensor):
    """`(classes, input_shape)` with registered weights' own where the caller left the
    keras.applications defaults (`classes=1000`, no input shape)."""
    entry = WEIGHTS.get((model_name, weights)) if is_pretrained_name(weights) else None
    if entry is None:
        return classes, input_shape
    if classes == 1000:
        classes = entry.classes
    if input_shape is None and input_tensor is None and entry.input_shape is not None:
        input_shape = entry.input_shape
    return classes, input_shape


def register(entry):
    """Adds (or replaces) a registry entry."""
    WEIGHTS[(entry.model_name, entry.name)] = entry


def registered_names():
    return sorted({name for _, name in WEIGHTS})


def is_pretrained_name(weights):
    return isinstance(weights, str) and weights in registered_names()


def cache_dir():
    """The Keras cache folder for models: `$KERAS_HOME/models`.

    Read at call time (Keras reads `KERAS_HOME` once, at import), and passed
    to `keras.utils.get_file` explicitly so both always agree.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "models")


def _is_path(weights):
    return isinstance(weights, (str, os.PathLike)) and (
        os.path.exists(weights)
        or str(weights).endswith((".h5", ".keras"))
        or os.sep in str(weights)
    )


def validate_weights_argument(weights, model_name, include_top, classes, classifier_activation,
                              attention=None):
    """Checks `weights` against the model; `attention` is the canonical attention name
    (or `"attention"` for a layer template)."""
    if weights is None:
        return
    if is_pretrained_name(weights):
        if (model_name, weights) not in WEIGHTS:
            available = sorted(n for m, n in WEIGHTS if m == model_name)
            raise ArgumentError(
                f"No `{weights}` weights are registered for {model_name}. "
                f"Registered for {model_name}: {available}. "
                f"Received: weights={weights!r}"
            )
        entry = WEIGHTS[(model_name, weights)]
        # Weights of a plain backbone go into any attention model (its gates keep their
        # initialisation); trained attention weights only into the same attention.
        if entry.attention is not None and attention != entry.attention:
            raise ArgumentError(
                f"`weights='{weights}'` of {model_name} hold trained {entry.attention!r} "
                f"attention; build the model with attention={entry.attention!r}. "
                f"Received: attention={attention!r}"
            )
        if include_top and classes != entry.classes:
            raise ArgumentError(
                f"If using `weights='{weights}'` with `include_top=True`, "
                f"`classes` should be {entry.classes}. Received: classes={classes}"
            )
        return
    if not _is_path(weights):
        raise ArgumentError(
            "The `weights` argument should be either `None` (random "
            f"initialization), a registered name ({registered_names()}), or the "
            "path to the weights file to be loaded. "
            f"Received: weights={weights!r}"
        )
    if not os.path.exists(weights):
        # As keras.applications: a ValueError naming the path, before anything is built.
        raise UsageError(
            f"The `weights` argument should be either `None` (random initialization), a "
            f"registered name, or the path to the weights file to be loaded; the file does "
            f"not exist. Received: weights={str(weights)!r}"
        )


def resolve(model_name, name):
    """The local path of registered weights, downloading them if possible.

    Raises:
        WeightsNotFoundError: with the steps to get the file, if it is not in the
            Keras cache and has no public origin.
        ValueError: if the cached file's sha256 does not match the registry.
    """
    entry = WEIGHTS[(model_name, name)]
    path = os.path.join(DATA_DIR if entry.packaged else cache_dir(), entry.file_name)
    if os.path.exists(path):
        if entry.sha256 and sha256_of(path) != entry.sha256:
            raise ArgumentError(
                f"The cached weights file {path} does not match its registered "
                f"sha256 {entry.sha256}; delete it and fetch it again. "
                f"Received: sha256={sha256_of(path)}"
            )
        return path
    if entry.origin:
        # get_file silently falls back to /tmp/.keras if the folder is missing.
        os.makedirs(cache_dir(), exist_ok=True)
        return keras.utils.get_file(
            fname=entry.file_name,
            origin=entry.origin,
            file_hash=entry.sha256,
            hash_algorithm="sha256",
            cache_dir=os.path.dirname(cache_dir()),
            cache_subdir="models",
        )
    raise WeightsNotFoundError(
        f"`weights='{name}'` for {model_name} ({entry.description}) is not in the "
        f"Keras cache ({path}) and has no public download. To get it:\n"
        f"{entry.how_to_get}"
    )


def install(path, model_name, name):
    """Copies a converted weights file into the cache as a registered name."""
    entry = WEIGHTS[(model_name, name)]
    os.makedirs(cache_dir(), exist_ok=True)
    target = os.path.join(cache_dir(), entry.file_name)
    tmp = target + ".tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    return target


def _weight_layers(model):
    return {l.name: l for l in model.layers if l.weights}


def copy_weights_by_name(source, target, allow_missing=()):
    """Copies weights layer by layer, matching layer names.

    Every target layer with weights must be found in `source` with the same
    weight shapes, except layers whose class is in `allow_missing` (those keep
    their initialisation). Errors name the layer and the shapes.
    """
    src = _weight_layers(source)
    for lname, layer in _weight_layers(target).items():
        if lname not in src:
            if isinstance(layer, tuple(allow_missing)):
                continue
            raise ArgumentError(
                f"The weights have no layer named '{lname}' "
                f"({layer.__class__.__name__}) of the model '{target.name}'; they "
                "were made for another architecture."
            )
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(w.shape) for w in src[lname].weights]
        if expected != got:
            raise ArgumentError(
                f"Layer '{lname}' of the model '{target.name}' has weight shapes "
                f"{expected} but the weights file has {got}; they were made for "
                "another architecture (or another number of classes)."
            )
        layer.set_weights(src[lname].get_weights())


def load_weights(model, weights, model_name, build_reference):
    """Loads `weights` (a registered name or a file) into `model`.

    Args:
        model: the model built by a zoo builder.
        weights: a registered name or a `.weights.h5` / `.keras` path.
        model_name: its zoo name (the registry key).
        build_reference: `(attention, classes) -> model`, the same
            architecture with a top of `classes` and the given attention, into
            which registered weights files load exactly (their layers are then
            copied by name).
    """
    from keras_cra.layers.registry import ATTENTIONS

    if is_pretrained_name(weights):
        entry = WEIGHTS[(model_name, weights)]
        path = resolve(model_name, weights)
        source = build_reference(entry.attention, entry.classes)
        _load_file_into(source, path)
        copy_weights_by_name(source, model, allow_missing=tuple(ATTENTIONS.values()))
        return
    path = os.fspath(weights)
    if path.endswith(".keras"):
        try:
            source = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ArgumentError(
                f"Could not read the model file {path!r}: {e}. "
                f"Received: weights={path!r}"
            ) from e
        copy_weights_by_name(source, model)
        return
    _load_file_into(model, path)


def _load_file_into(model, path):
    try:
        with warnings.catch_warnings():
            # Keras warns once per skipped sublayer (~190 lines for a ResNet) before the
            # error below, which says the same once.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except Exception as e:
        raise ArgumentError(
            f"Could not load the weights file {path!r} into the model "
            f"'{model.name}' (a missing/corrupt file or another architecture): {e}"
        ) from e
