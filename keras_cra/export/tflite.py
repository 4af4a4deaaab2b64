"""TFLite (LiteRT) conversion with builtin ops only, and inference."""

import numpy as np

from keras_cra.errors import ArgumentError, UserError
from keras_cra.export.base import ExportError, ExportFormat

# What `convert` can do; each is registered as an export format in formats.py.
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


class UnsupportedOpsError(UserError):
    """The model needs ops outside the TFLite builtin set."""


def _serving_function(model, batch_size, input_dtype=None, preprocess=None):
    import tensorflow as tf

    shape = (batch_size,) + tuple(model.input_shape[1:])
    if any(d is None for d in shape[1:]):
        raise ArgumentError(
            "TFLite export needs a model with a fixed input size; rebuild it "
            "with a concrete `input_shape`. "
            f"Received: model.input_shape={model.input_shape}"
        )
    dtype = input_dtype or model.inputs[0].dtype

    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="images")])
    def serve(images):
        x = preprocess(images) if preprocess is not None else images
        return model(x, training=False)

    return serve


def convert(
    model,
    quantization="float32",
    batch_size=1,
    representative_data=None,
    integer_io="float",
    input_dtype=None,
    preprocess=None,
):
    """Converts a Keras model to a TFLite flatbuffer using builtin ops only.

    Args:
        model: a Keras model with a fixed input size.
        quantization: `"float32"`, `"float16"` (float16 weights),
            `"dynamic"` (dynamic-range int8 weights) or `"int8"` (full
            integer, needs `representative_data`).
        batch_size: int, or `None` for a dynamic batch dimension.
        representative_data: with `"int8"`, an iterable of NumPy batches of
            the model's input shape (calibration data).
        integer_io: with `"int8"`, `"float"` (float I/O), `"int8"` or
            `"uint8"` I/O tensors.
        input_dtype: dtype of the input signature (default: the model's).
        preprocess: optional function applied to the input before the model
            (baked into the graph).

    Returns:
        The flatbuffer as `bytes`.

    Raises:
        UnsupportedOpsError: if any op would need Flex (select TF) ops.
    """
    _check_conversion(quantization, integer_io)
    return convert_function(_serving_function(model, batch_size, input_dtype, preprocess),
                            quantization, representative_data, integer_io)


def _check_conversion(quantization, integer_io):
    if quantization not in QUANTIZATIONS:
        raise ArgumentError(
            f"`quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if integer_io not in ("float", "int8", "uint8"):
        raise ArgumentError(
            "`integer_io` must be one of 'float', 'int8', 'uint8'. "
            f"Received: integer_io={integer_io!r}"
        )


def builtins_only(converter):
    """Makes a `tf.lite.TFLiteConverter` fail rather than add Flex (select TF) ops."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert_function(function, quantization="float32", representative_data=None,
                     integer_io="float"):
    """Converts a `tf.function` (traced here, with an input signature) to a builtins-only
    TFLite flatbuffer: the one conversion step of every export (classifiers through
    `convert`, detectors through `keras_cra.detection.export`). Arguments as `convert`'s.

    Raises:
        UnsupportedOpsError: if any op would need Flex (select TF) ops.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from keras_cra.layers.cra import builtin_pooling

    _check_conversion(quantization, integer_io)
    # Freeze the weights into constants: captured resource variables would otherwise
    # become READ_VARIABLE ops that a stock runtime cannot feed. CRA's pool is traced as
    # max pools on slices: XNNPACK takes them, not a GATHER.
    with builtin_pooling():
        fn = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = builtins_only(tf.lite.TFLiteConverter.from_concrete_functions([fn]))
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative_data is None:
            raise ArgumentError(
                "Full-integer quantization needs calibration data. "
                "Received: representative_data=None"
            )
        expected = tuple(fn.inputs[0].shape[1:])
        batches = [np.asarray(b) for b in representative_data]
        for b in batches:
            if b.ndim != len(expected) + 1 or tuple(b.shape[1:]) != expected:
                raise ArgumentError(
                    "Each representative batch must have shape "
                    f"(batch, {', '.join(map(str, expected))}). "
                    f"Received: representative_data batch shape={b.shape}"
                )
        np_dtype = fn.inputs[0].dtype.as_numpy_dtype
        fixed_batch = fn.inputs[0].shape[0]

        def gen():
            for b in batches:
                for start in range(0, len(b), fixed_batch or len(b)):
                    yield [b[start : start + (fixed_batch or len(b))].astype(np_dtype)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_io != "float":
            io_type = tf.int8 if integer_io == "int8" else tf.uint8
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError
        message = str(e)
        if "Flex" in message or "select" in message.lower() or "not supported" in message:
            raise UnsupportedOpsError(
                "The model needs ops outside the TFLite builtin set, so it "
                f"cannot run on a stock LiteRT runtime. Converter said: {message}"
            ) from e
        raise


def interpreter(model_content, num_threads=None):
    """An `ai_edge_litert` interpreter for a flatbuffer (bytes) or path."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model_content, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model_content), num_threads=num_threads)
    return Interpreter(model_path=str(model_content), num_threads=num_threads)


def run(model_content, x, num_threads=None, interp=None):
    """Runs a TFLite model on a batch `x`, handling (de)quantisation.

    A dynamic batch dimension is resized to `len(x)`; a fixed batch of 1 is
    run image by image.
    """
    interp = interp or interpreter(model_content, num_threads)
    inp = interp.get_input_details()[0]
    x = np.asarray(x)
    fixed = inp["shape_signature"][0] != -1
    if fixed and inp["shape"][0] != len(x):
        return np.concatenate(
            [run(None, x[i : i + inp["shape"][0]], interp=interp)
             for i in range(0, len(x), inp["shape"][0])]
        )
    if not fixed:
        interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if inp["dtype"] in (np.int8, np.uint8) and x.dtype != inp["dtype"]:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min,
                    np.iinfo(inp["dtype"]).max)
    interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if out["dtype"] in (np.int8, np.uint8):
        scale, zero = out["quantization"]
        y = (y.astype("float32") - zero) * scale
    return y


def op_names(model_content):
    """The set of op names in a flatbuffer (for builtins-only checks)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=bytes(model_content))
    return {d["op_name"] for d in interp._get_ops_details()}


def delegate_partitions(model_content, num_threads=1):
    """How many partitions the default (XNNPACK) delegate makes of a model.

    One partition means the whole graph runs inside the delegate; every op
    it cannot take splits the graph and costs a round trip to TFLite's own
    kernels.
    """
    interp = interpreter(model_content, num_threads)
    interp.allocate_tensors()
    return sum(d["op_name"] == "DELEGATE" for d in interp._get_ops_details())


def find_unsupported_layers(model):
    """Names of layers that do not convert to builtin TFLite ops on their own."""
    import keras

    bad = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inputs = [keras.Input(t.shape[1:], dtype=t.dtype) for t in _as_list(layer.input)]
            sub = keras.Model(inputs, layer(inputs if len(inputs) > 1 else inputs[0]))
            if any(d is None for d in sub.input_shape[1:] if not isinstance(d, tuple)):
                continue
            convert(sub, batch_size=1)
        except UnsupportedOpsError:
            bad.append(f"{layer.name} ({layer.__class__.__name__})")
        except Exception:
            continue
    return bad


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class TFLiteFormat(ExportFormat):
    """A builtins-only `.tflite` file: `float32`, `float16` (weights), `dynamic`
    (dynamic-range int8 weights) or `int8` (full integer, calibrated)."""

    thread_counts = (1, None)

    def __init__(self, variant, tolerance=None):
        self.name = variant
        self.artifact = f"model_{variant}.tflite"
        self.tolerance = tolerance

    def write(self, model, path, context):
        from keras_cra.export.serving import probability_model

        int8 = self.name == "int8"
        try:
            flat = convert(
                probability_model(model), quantization=self.name, batch_size=1,
                representative_data=context["representative_data"] if int8 else None,
                integer_io=context["integer_io"] if int8 else "float",
            )
        except UnsupportedOpsError as e:
            layers = find_unsupported_layers(model)
            raise ExportError(
                "The model has layers that TFLite cannot run with builtin ops: "
                f"{', '.join(layers) or '(could not isolate them)'}. {e}"
            ) from e
        with open(path, "wb") as f:
            f.write(flat)

    def runner(self, path, num_threads=None):
        interp = interpreter(path, num_threads=num_threads)
        return lambda x: run(None, x, interp=interp)
