"""Add channel attention to any Keras functional or Sequential CNN."""

import inspect

import keras

from keras_cra.backbone import Backbone, as_backbone
from keras_cra.errors import ArgumentError
from keras_cra.layers.registry import canonical_attention_name, get_attention

PLACEMENTS = ("residual", "after")


def _history(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def _parents(tensor):
    """The input tensors of the operation that made `tensor` (in its own graph)."""
    operation = _history(tensor)
    if operation is None:
        return []
    node = operation._inbound_nodes[tensor._keras_history.node_index]
    return list(node.input_tensors)


def _longest_paths(tensor):
    """`{id(ancestor): number of layers on the longest path from it to tensor}`."""
    best = {id(tensor): 0}
    order, stack, seen = [], [tensor], set()
    while stack:  # every ancestor, each once
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        order.append(t)
        stack.extend(_parents(t))
    # Longest path: relax in reverse topological order (children before parents).
    pending = {id(t): 0 for t in order}
    for t in order:
        for p in _parents(t):
            pending[id(p)] += 1
    ready = [tensor]
    while ready:
        t = ready.pop()
        for p in _parents(t):
            best[id(p)] = max(best.get(id(p), 0), best[id(t)] + 1)
            pending[id(p)] -= 1
            if pending[id(p)] == 0:
                ready.append(p)
    return best


def residual_input_index(add_node):
    """Which input of a two-input `Add` node is the residual branch, or `None`.

    The skip input is the one the other branch starts from: an identity
    skip is an ancestor of the residual branch; a projection skip and the
    residual branch start from the same tensor (the block input), and the
    residual branch is the longer of the two (more layers).
    """
    inputs = list(add_node.input_tensors)
    if len(inputs) != 2:
        return None
    paths = [_longest_paths(t) for t in inputs]
    if id(inputs[0]) in paths[1]:
        return 1
    if id(inputs[1]) in paths[0]:
        return 0
    common = set(paths[0]) & set(paths[1])
    if not common:
        return None
    # The block input: the common ancestor closest to the add.
    start = min(common, key=lambda k: paths[0][k] + paths[1][k])
    lengths = paths[0][start], paths[1][start]
    if lengths[0] == lengths[1]:
        return None
    return 0 if lengths[0] > lengths[1] else 1


def _functional(model):
    """A functional (graph) model that is not a Sequential."""
    return (isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
            and hasattr(model, "_nodes_by_depth"))


def _graph_model(layer):
    """A model that add_attention can rebuild: functional or Sequential."""
    return isinstance(layer, keras.Sequential) or _functional(layer)


def _is_add(operation):
    """An `Add` layer, or the `+` of two Keras tensors (the `keras.ops` Add operation)."""
    return isinstance(operation, keras.layers.Add) or (
        type(operation).__name__ == "Add"
        and type(operation).__module__.startswith("keras.src.ops"))


def _plan(model, placement, names, plan, seen_adds):
    """Fills `plan[id(layer)] = residual input index` (or `"after"`) for every layer of
    `model` and of the graph models nested in it."""
    operations = model.layers if isinstance(model, keras.Sequential) else model.operations
    for layer in operations:
        if _graph_model(layer):
            _plan(layer, placement, names, plan, seen_adds)
            continue
        if placement == "after":
            if layer.name in names:
                plan[id(layer)] = "after"
                names.discard(layer.name)
        elif _is_add(layer):
            seen_adds.append(layer.name)
            if isinstance(model, keras.Sequential):
                continue
            index = residual_input_index(layer._inbound_nodes[0])
            if index is not None:
                plan[id(layer)] = index


def _attention_name(layer_name, suffix):
    base = layer_name[: -len("_add")] if layer_name.endswith("_add") else layer_name
    return f"{base}_{suffix}"


def add_attention(model, attention="cra", attention_kwargs=None, placement="residual",
                  layers=None, near_identity=False, input_tensors=None):
    """Returns a copy of `model` with a channel attention layer at every residual block.

    The new model is independent of `model`, as `keras.models.clone_model`
    makes it: every layer is a new object (nested models too) holding a copy
    of the original's weights, so pretrained weights stay pretrained while
    training the new model leaves `model` untouched, and every
    `get_layer(name).output` (and every pyramid output of a backbone) is a
    tensor of the new graph. Layers shared inside `model` stay shared in the
    copy. The attention layers are new.

    Args:
        model: a Keras functional or Sequential model (models nested in it,
            such as a `keras.applications` backbone inside a Sequential, are
            handled too).
        attention: a registered attention name (`"cra"`, `"se"`, `"eca"`)
            or a Keras layer used as a template (see `get_attention`).
        attention_kwargs: optional arguments of the attention layers.
        placement: `"residual"`: on every `Add` that merges a skip
            connection, on the residual branch, after its last layer and
            before the addition (the paper's place). The skip input is
            found from the graph, not from layer names. `"after"`: after
            each layer named in `layers`.
        layers: with `placement="after"`, the names of the layers to follow.
        near_identity: start every gate at about 1 (CRA and SE: zero kernel
            and bias 10, a gate of 0.99995), so that the new model computes
            almost the same function as `model` at step 0. ECA has no bias,
            so its gate cannot start near 1: an error.
        input_tensors: optional Keras tensors to build the new model on (as
            in `keras.models.clone_model`), with the structure of
            `model.input`; default: new `Input`s.

    Returns:
        A new `keras.Model` with its own layers.

    Example:

    >>> backbone = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    >>> cra = keras_cra.add_attention(backbone, "cra", near_identity=True)

    Reference:
        - [Shen & Wen, Convolutional Neural Network optimization via Channel
          Reassessment Attention module, 2020](https://arxiv.org/abs/2010.05605)
    """
    if not isinstance(model, keras.Model):
        raise ArgumentError(f"`model` must be a keras.Model. Received: model={model!r}")
    if not _graph_model(model):
        raise ArgumentError(
            "`model` must be a functional or Sequential model (a subclassed model has no "
            f"graph to insert layers into). Received: model={model.name!r} "
            f"({type(model).__name__})"
        )
    if placement not in PLACEMENTS:
        raise ArgumentError(f"`placement` must be one of {PLACEMENTS}. "
                         f"Received: placement={placement!r}")
    if isinstance(attention, keras.layers.Layer):
        suffix = "attention"
    else:
        suffix = canonical_attention_name(attention)
        if suffix is None:
            raise ArgumentError("`attention` must be an attention, not None. "
                             f"Received: attention={attention!r}")
    attention_kwargs = dict(attention_kwargs or {})
    names = set(layers or ())
    if placement == "after" and not names:
        raise ArgumentError("`placement='after'` needs `layers`, the names of the layers to "
                         f"follow. Received: layers={layers!r}")
    if placement == "residual" and layers:
        raise ArgumentError("`layers` is only used with `placement='after'`. "
                         f"Received: layers={layers!r}")

    if near_identity:  # fail before rebuilding anything
        probe = get_attention(attention, **attention_kwargs)
        probe.build((1, 7, 7, 8) if probe.data_format == "channels_last" else (1, 8, 7, 7))
        _start_near_identity(probe)
    plan, adds = {}, []
    _plan(model, placement, names, plan, adds)
    if placement == "after" and names:
        raise ArgumentError(f"No layer named {sorted(names)} in the model. "
                         f"Received: layers={list(layers)!r}")
    if not plan:
        raise ArgumentError(
            f"No place found for placement={placement!r}: the model has {len(adds)} `Add` "
            "layers, none of which merges a skip connection with a residual branch. Pass "
            "`placement='after', layers=[...]` to choose the places. "
            f"Received: model={model.name!r}"
        )
    created, copies = [], {}

    def attend(x, name):
        layer = get_attention(attention, name=name, **attention_kwargs)
        created.append(layer)
        return layer(x)

    def call_function(layer, *args, **kwargs):
        original = copies[id(layer)][0] if id(layer) in copies else layer
        step = plan.get(id(original))
        if step is None:
            return layer(*args, **kwargs)
        if step == "after":
            return attend(layer(*args, **kwargs), f"{layer.name}_{suffix}")
        if isinstance(layer, keras.layers.Add):
            inputs = list(args[0])
            inputs[step] = attend(inputs[step], _attention_name(layer.name, suffix))
            return layer(inputs, *args[1:], **kwargs)
        args = list(args)  # the keras.ops Add: layer(x1, x2)
        args[step] = attend(args[step], _attention_name(layer.name, suffix))
        return layer(*args, **kwargs)

    new = _copy(model, call_function, copies, input_tensors)
    if near_identity:
        for layer in created:
            _start_near_identity(layer)
    return new


def copy_model(model, input_tensors=None):
    """An independent copy of a functional or Sequential `model`: new layers (nested
    models too) with copies of its weights, built on `input_tensors` (default: new
    `Input`s), as `add_attention` makes it, without attention."""
    return _copy(model, None, {}, input_tensors)


def _copy(model, call_function, copies, input_tensors):
    adopted = {}
    try:
        new = _rebuild(model, call_function, copies, input_tensors, adopted)
    finally:
        for _, copy in copies.values():
            if "add_weight" in vars(copy):
                object.__delattr__(copy, "add_weight")
    for original, copy in copies.values():
        weights = _weights(original)
        if weights and adopted.get(id(copy), 0) != len(weights):
            copy.set_weights(original.get_weights())
    return new


def _adopt_weights(copy, original, adopted):
    """Makes `copy` (unbuilt) create each weight from the value of `original`'s weight of
    the same name and shape, instead of running its initializer and then overwriting the
    result: this halves the cost of copying a model (new variables are the cost).
    `adopted[id(copy)]` counts the weights so made; `_copy` sets the others."""
    pending = list(original.weights)
    add_weight = copy.add_weight

    def add_weight_from_original(*args, **kwargs):
        bound = _ADD_WEIGHT.bind(copy, *args, **kwargs)
        name, shape = bound.arguments.get("name"), bound.arguments.get("shape")
        for i, weight in enumerate(pending):
            if weight.name == name and shape is not None and tuple(weight.shape) == tuple(shape):
                del pending[i]
                bound.arguments["initializer"] = keras.ops.copy(weight.value)
                adopted[id(copy)] = adopted.get(id(copy), 0) + 1
                break
        arguments = dict(bound.arguments)
        del arguments["self"]
        return add_weight(*arguments.pop("args", ()), **arguments)

    object.__setattr__(copy, "add_weight", add_weight_from_original)


_ADD_WEIGHT = inspect.signature(keras.layers.Layer.add_weight)


def _weights(operation):
    # A graph also holds bare operations (`x + 3.0` in MobileNetV3), which have no weights.
    return getattr(operation, "weights", None) or []


def _rebuild(model, call_function, copies, input_tensors=None, adopted=None):
    """A copy of `model` made of new layers (recorded as `copies[id(new)] = (old, new)`;
    a layer shared inside `model` is copied once), each call going through
    `call_function`; weights are copied by the caller."""
    by_original = {id(old): new for old, new in copies.values()}

    def clone_function(layer):
        if id(layer) in by_original:
            return by_original[id(layer)]
        if _graph_model(layer):
            copy = _rebuild(layer, call_function, copies, adopted=adopted)
        else:
            copy = layer.__class__.from_config(layer.get_config())
            copies[id(copy)] = (layer, copy)
            if adopted is not None and _weights(layer) and not copy.built:
                _adopt_weights(copy, layer, adopted)
        by_original[id(layer)] = copy
        return copy

    if isinstance(model, keras.Sequential):
        inner = [clone_function(l) for l in model.layers]
        return keras.Sequential([keras.Input(model.input_shape[1:])] + inner,
                                name=model.name)

    if isinstance(model, Backbone):  # rebuilt as a plain graph, then given its levels back
        plain = keras.Model(model.inputs, model.outputs, name=model.name)
        return as_backbone(_rebuild(plain, call_function, copies, input_tensors, adopted),
                           model.pyramid_layers)
    if input_tensors is None:
        return keras.models.clone_model(model, clone_function=clone_function,
                                        call_function=call_function)
    # On given tensors (maybe intermediate ones, as keras.applications' `input_tensor`): the
    # step clone_model runs (a private method of Keras' Function), without clone_model's
    # Functional wrapper, which re-clones the graph's nodes when its inputs are intermediate
    # tensors; the model is made on the tensors' source inputs, as keras.applications does.
    # tests/applications/test_keras_contract.py guards it (input_tensor with predecessors).
    outputs = model._run_through_graph(input_tensors, operation_fn=clone_function,
                                       call_fn=call_function)
    return keras.Model(keras.utils.get_source_inputs(input_tensors), outputs, name=model.name)


def _start_near_identity(layer):
    from keras_cra.layers.base import ChannelGate

    if not isinstance(layer, ChannelGate):
        raise ArgumentError(
            "`near_identity=True` needs a keras_cra gate (a ChannelGate, which knows how to "
            f"start at 1). Received: attention={type(layer).__name__}")
    layer.start_near_identity()
