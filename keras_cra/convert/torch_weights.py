"""Convert PyTorch ResNet / CRA-ResNet checkpoints to keras_cra models.

Two layouts are understood:

- the CRA authors' (`format="authors"`): a dict with `state_dict` (keys like
  `basic_conv.0.weight`, `stage_1.0.conv1.0.weight`, `stage_1.0.conv1.1.*`
  for its BatchNorm, `stage_1.0.cra.conv_cra.weight`, `stage_1.0.shortcut.0.weight`,
  `classifier.weight`, possibly prefixed `module.`), next to `epoch`,
  `optimizer`, `scheduler` and a pickled `recorder`;
- torchvision's (`format="torchvision"`): a plain state_dict (`conv1.weight`,
  `bn1.*`, `layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, `fc.*`).
  It has no attention weights: CRA layers keep their initialisation, or with
  `near_identity_gates=True` start as gates of ~1 (kernel 0, bias
  `gate_bias`), so the pretrained network computes almost the same function
  at step 0.

Every tensor of the checkpoint must be used exactly once and every Keras
weight set exactly once; anything else is an error that names the keys.
"""

import collections
import re

import numpy as np

from keras_cra.convert import safe_load
from keras_cra.errors import ArgumentError, UserError


class ConversionError(UserError):
    """The checkpoint does not match the requested architecture."""


def _conv(w):  # OIHW (also grouped: O, I/groups, H, W) -> HWIO
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w):  # (C, 1, s, s) -> (s, s, C, 1)
    return np.transpose(w, (2, 3, 0, 1))


def _linear(w):
    return np.transpose(w)


def _torch_block_names(fmt, stage, block):
    if fmt == "authors":
        return f"stage_{stage}.{block}"
    return f"layer{stage}.{block}"


def mapping(model, fmt):
    """`[(keras_layer_name, [(torch_key, transform)], [ignored keys])]`."""
    rows = []
    if fmt == "authors":
        stem_conv, stem_bn, head = "basic_conv.0", "basic_conv.1", "classifier"
    else:
        stem_conv, stem_bn, head = "conv1", "bn1", "fc"

    def conv(layer, key):
        rows.append((layer, [(f"{key}.weight", _conv)], []))

    def bn(layer, key):
        rows.append((layer, [(f"{key}.{n}", None) for n in
                             ("weight", "bias", "running_mean", "running_var")],
                     [f"{key}.num_batches_tracked"]))

    conv("conv1_conv", stem_conv)
    bn("conv1_bn", stem_bn)
    names = {l.name for l in model.layers}
    stage = 2
    while f"conv{stage}_block1_out" in names:
        block = 1
        while f"conv{stage}_block{block}_out" in names:
            k = f"conv{stage}_block{block}"
            t = _torch_block_names(fmt, stage - 1, block - 1)
            n = 1
            while f"{k}_{n}_conv" in names:
                if fmt == "authors":
                    conv(f"{k}_{n}_conv", f"{t}.conv{n}.0")
                    bn(f"{k}_{n}_bn", f"{t}.conv{n}.1")
                else:
                    conv(f"{k}_{n}_conv", f"{t}.conv{n}")
                    bn(f"{k}_{n}_bn", f"{t}.bn{n}")
                n += 1
            if f"{k}_0_conv" in names:
                short = f"{t}.shortcut" if fmt == "authors" else f"{t}.downsample"
                conv(f"{k}_0_conv", f"{short}.0")
                bn(f"{k}_0_bn", f"{short}.1")
            if f"{k}_cra" in names and fmt == "authors":
                rows.append((f"{k}_cra", [(f"{t}.cra.conv_cra.weight", _depthwise),
                                          (f"{t}.cra.conv_cra.bias", None)], []))
            block += 1
        stage += 1
    if "predictions" in names:
        rows.append(("predictions", [(f"{head}.weight", _linear), (f"{head}.bias", None)], []))
    return rows


def detect_format(state_dict):
    keys = set(state_dict)
    if any(k.startswith("basic_conv.") or k.startswith("stage_1.") for k in keys):
        return "authors"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    raise ConversionError(
        "Unrecognised checkpoint layout (neither the CRA authors' `basic_conv.*`/"
        "`stage_*` keys nor torchvision's `conv1`/`layer*` keys). First keys: "
        f"{sorted(keys)[:5]}"
    )


def extract_state_dict(obj):
    """The state_dict inside a checkpoint object, with `module.` stripped."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ConversionError("The checkpoint holds no state_dict of tensors.")
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        raise ConversionError(f"The checkpoint's state_dict has keys that are not names: "
                              f"{bad[:5]!r}; a state_dict maps parameter names to tensors.")
    out = collections.OrderedDict()
    for k, v in obj.items():
        out[re.sub(r"^module\.", "", k)] = v
    return out


def assign(model, state_dict, fmt, near_identity_gates=False, gate_bias=5.0):
    """Sets every weight of `model` from `state_dict` (strict, see module doc)."""
    from keras_cra.layers import ChannelReassessmentAttention

    used = set()
    assigned = set()
    problems = []
    for layer_name, keys, ignored in mapping(model, fmt):
        layer = model.get_layer(layer_name)
        values = []
        for key, transform in keys:
            if key not in state_dict:
                problems.append(f"missing tensor `{key}` for layer '{layer_name}'")
                continue
            value = state_dict[key]
            values.append(transform(value) if transform else value)
            used.add(key)
        used.update(k for k in ignored if k in state_dict)
        if len(values) != len(keys):
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            problems.append(f"layer '{layer_name}' expects shapes {expected}, the checkpoint "
                            f"gives {got} (from {[k for k, _ in keys]})")
            continue
        layer.set_weights([v.astype(np.float32) for v in values])
        assigned.add(layer_name)
    unused = sorted(set(state_dict) - used)
    if unused:
        problems.append(f"checkpoint tensors not used: {unused[:10]}"
                        + (f" (+{len(unused) - 10} more)" if len(unused) > 10 else ""))
    for layer in model.layers:
        if not layer.weights or layer.name in assigned:
            continue
        if isinstance(layer, ChannelReassessmentAttention) and fmt == "torchvision":
            if near_identity_gates:
                layer.start_near_identity(gate_bias)
            continue
        problems.append(f"Keras layer '{layer.name}' ({layer.__class__.__name__}) got no weights")
    if problems:
        raise ConversionError("The checkpoint does not match the model:\n  - " + "\n  - ".join(problems))


# The largest classifier head the converter builds (ImageNet-21k has 21,843 classes).
MAX_CLASSES = 25_000


def _head_classes(head, key):
    """The class count of a classifier weight `(classes, features)`, checked before the
    model is built."""
    if head.ndim != 2 or head.shape[0] < 1 or head.shape[1] < 1:
        raise ConversionError(f"`{key}` has shape {tuple(head.shape)}; a classifier weight is "
                              "(classes, features) with both at least 1.")
    if head.shape[0] > MAX_CLASSES:
        raise ConversionError(f"`{key}` declares {head.shape[0]:,} classes; the converter builds "
                              f"at most {MAX_CLASSES:,}.")
    return int(head.shape[0])


def _max_checkpoint_bytes(model_name):
    """What a checkpoint of `model_name` can hold: its parameters with a head of up to
    `MAX_CLASSES` classes, as float64 and as many optimizer buffers again, and 64 MiB of
    other records (the authors' RecorderMeter)."""
    from keras_cra.applications import zoo

    model = zoo.get_model(model_name, weights=None, classes=1000)
    params, features = model.count_params(), model.layers[-1].input.shape[-1]
    return 2 * 8 * (params + MAX_CLASSES * (features + 1)) + (64 << 20)


def from_torch_checkpoint(path, model_name="CRAResNet50", format="auto", attention="auto",
                          near_identity_gates=False, gate_bias=5.0, input_shape=None):
    """Builds a keras_cra model and loads a PyTorch checkpoint into it.

    Args:
        path: a `torch.save` file (`.pth`, `.pkl`), read without executing
            any code from it (see `keras_cra.convert.safe_load`).
        model_name: a `keras_cra.applications` model, e.g. `"CRAResNet50"`.
        format: `"authors"`, `"torchvision"` or `"auto"` (from the keys).
        attention: attention of the built model; `"auto"`: `"cra"` for the
            authors' checkpoints, `None` (plain backbone) for torchvision.
        near_identity_gates: for torchvision weights in a CRA model, start
            each CRA gate at `sigmoid(gate_bias)` (~1) with a zero kernel.
        input_shape: optional input shape of the built model.

    Returns:
        A `keras.Model` with `include_top=True` and the checkpoint's classes.
    """
    from keras_cra.applications import zoo

    obj, _ = safe_load.load(path, max_bytes=_max_checkpoint_bytes(model_name))
    state_dict = extract_state_dict(obj)
    fmt = detect_format(state_dict) if format == "auto" else format
    if fmt not in ("authors", "torchvision"):
        raise ArgumentError(
            f"`format` must be 'auto', 'authors' or 'torchvision'. Received: format={format!r}"
        )
    if attention == "auto":
        attention = "cra" if fmt == "authors" else None
    head_key = "classifier.weight" if fmt == "authors" else "fc.weight"
    head = state_dict.get(head_key)
    classes = _head_classes(head, head_key) if head is not None else 1000
    model = zoo.get_model(model_name, weights=None, classes=classes, attention=attention,
                             input_shape=input_shape)
    assign(model, state_dict, fmt, near_identity_gates, gate_bias)
    return model
