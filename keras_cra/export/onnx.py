"""ONNX export (Keras' own `model.export(format="onnx")`, through tf2onnx) and onnxruntime
inference. Needs the `[onnx]` extra: `pip install 'keras_cra[onnx]'`."""

import numpy as np

from keras_cra.export.base import ExportError, ExportFormat

EXTRA = "pip install 'keras_cra[onnx]'"


def _require(module):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"The onnx export format needs {module}: {EXTRA}. "
                          f"Received: variants=['onnx']") from e


def check_available():
    """Raises ExportError naming the extra when tf2onnx, onnx or onnxruntime is missing."""
    for module in ("tf2onnx", "onnx", "onnxruntime"):
        _require(module)


def write_onnx(model, path):
    """Writes `model` (probabilities out) to `path` with a dynamic batch dimension; the
    input is named `inputs` (float32, preprocessed, (N, H, W, C))."""
    import tensorflow as tf

    from keras_cra.export.serving import probability_model

    check_available()
    model = probability_model(model)
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="inputs")
    model.export(path, format="onnx", verbose=False, input_signature=[spec])


def session(path, num_threads=None):
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class ONNXFormat(ExportFormat):
    """`model.onnx`: float32 preprocessed images in (any batch), probabilities out."""

    name = "onnx"
    artifact = "model.onnx"
    tolerance = 1e-4
    thread_counts = (1, None)

    def write(self, model, path, context):
        write_onnx(model, path)

    def runner(self, path, num_threads=None):
        run = session(path, num_threads)
        name = run.get_inputs()[0].name

        def predict(x):
            return np.concatenate([run.run(None, {name: x[i:i + 256].astype("float32")})[0]
                                   for i in range(0, len(x), 256)])

        return predict
