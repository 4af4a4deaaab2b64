"""What the attention gates of a model do: per-channel gate values on images."""

import numpy as np

from keras_cra.errors import ArgumentError


def _is_gate(layer):
    from keras_cra.layers.base import ChannelGate

    return isinstance(layer, ChannelGate)


def _has_gates(layer):
    import keras

    return isinstance(layer, keras.Model) and any(
        _is_gate(sub) or _has_gates(sub) for sub in layer.layers)


def _input_in(model, layer):
    """The input tensor of `layer` at its call inside `model`'s own graph (a nested
    model's `.input` is its own Input, not the tensor that feeds it)."""
    import keras

    graph = model._functional if isinstance(model, keras.Sequential) else model
    nodes = {id(n) for depth in graph._nodes_by_depth.values() for n in depth}
    calls = [n for n in layer._inbound_nodes if id(n) in nodes]
    if len(calls) != 1:
        raise ArgumentError(
            f"Layer {layer.name!r} is called {len(calls)} times in the model; gate statistics "
            f"need each attention layer called once. Received: model={model.name!r}"
        )
    return calls[0].input_tensors[0]


def _gates(model, images, batch_size, prefix=""):
    """`[(name, layer, gates (N, C))]` of every gate layer, nested models included."""
    import keras
    from keras import ops

    if not hasattr(model, "inputs") or not model.inputs or not model.layers:
        raise ArgumentError(
            "`model` must be a functional or Sequential Keras model (a subclassed model has "
            f"no graph to read the attention inputs from). Received: model={model.name!r}"
        )
    targets = [layer for layer in model.layers if _is_gate(layer) or _has_gates(layer)]
    if not targets:
        return []
    outputs = []
    for layer in targets:
        x = _input_in(model, layer)
        if _is_gate(layer):
            gate = layer.gate(x)
            # (N, 1, 1, C) or (N, C, 1, 1) -> (N, C)
            channels = int(np.prod(gate.shape[1:]))
            outputs.append(ops.reshape(ops.cast(gate, "float32"), (-1, channels)))
        else:
            outputs.append(x)
    probe = keras.Model(model.inputs, outputs)
    values = probe.predict(images, batch_size=batch_size, verbose=0)
    if len(outputs) == 1:
        values = [values]
    found = []
    for layer, value in zip(targets, values):
        if _is_gate(layer):
            found.append((prefix + layer.name, layer, np.asarray(value)))
        else:
            found += _gates(layer, value, batch_size, prefix=f"{prefix}{layer.name}/")
    return found


def stage_of(name):
    """The stage a gate layer belongs to, from its name: `conv3_block2_cra` -> `conv3`."""
    base = name.rsplit("/", 1)[-1]
    return base.split("_block")[0] if "_block" in base else base


def gate_statistics(model, images, batch_size=32):
    """Gate values of every attention layer of a model on a batch of images.

    Args:
        model: a functional or Sequential Keras model holding attention
            layers (CRA, SE, ECA or any `ChannelGate`), possibly inside
            nested models.
        images: NumPy array of preprocessed model inputs, `(N, H, W, C)`.
        batch_size: int, the batch size of the forward passes.

    Returns:
        A list, in model order, with one dict per attention layer: `name`
        (nested models as `outer/inner`), `stage` (see `stage_of`),
        `attention` (the layer class), `gates` (`(N, channels)` float32: the
        sigmoid gate of each channel on each image), `mean` and `std`
        (`(channels,)`: over the images).

    Raises:
        ValueError: for a model without a graph or without attention layers,
            or `images` that are not a non-empty 4D batch.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise ArgumentError(
            "`images` must be a non-empty batch of shape (N, H, W, C). "
            f"Received: images.shape={images.shape}"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ArgumentError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    found = _gates(model, images, batch_size)
    if not found:
        raise ArgumentError(
            "`model` has no attention layers (CRA, SE, ECA or another ChannelGate). "
            f"Received: model={model.name!r}"
        )
    return [
        {"name": name, "stage": stage_of(name), "attention": type(layer).__name__,
         "gates": gates, "mean": gates.mean(axis=0), "std": gates.std(axis=0)}
        for name, layer, gates in found
    ]


def plot_gate_statistics(stats, path, max_images=64):
    """Writes a PNG: per stage, a heatmap of the gate values of its last
    attention layer (channels sorted by mean gate x images) and a histogram of
    every gate value of the stage."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    stages = {}
    for s in stats:
        stages.setdefault(s["stage"], []).append(s)
    fig = Figure(figsize=(10, 2.4 * len(stages)))
    axes = fig.subplots(len(stages), 2, squeeze=False,
                        gridspec_kw={"width_ratios": [3, 1]})
    for row, (stage, layers) in enumerate(stages.items()):
        last = layers[-1]
        gates = last["gates"][:max_images]
        order = np.argsort(last["mean"])
        image = axes[row, 0].imshow(gates[:, order].T, aspect="auto", cmap="viridis",
                                    vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[row, 0].set_title(f"{last['name']}: gate per channel (sorted) x image", fontsize=9)
        axes[row, 0].set_ylabel("channel")
        axes[row, 0].set_xlabel("image")
        fig.colorbar(image, ax=axes[row, 0], fraction=0.03)
        values = np.concatenate([s["gates"].ravel() for s in layers])
        axes[row, 1].hist(values, bins=40, range=(0.0, 1.0), color="tab:blue")
        axes[row, 1].set_title(f"{stage}: {len(layers)} layer(s), all gates", fontsize=9)
        axes[row, 1].set_xlabel("gate")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
