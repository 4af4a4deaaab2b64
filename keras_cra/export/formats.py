"""The registry of export formats: `--variants` and verification read it.

To add a format: a module with a `keras_cra.export.base.ExportFormat`
subclass, and one line in `FORMATS` below.
"""

from keras_cra.export.base import ExportError, ExportFormat  # noqa: F401 (re-exported)
from keras_cra.export.onnx import ONNXFormat
from keras_cra.export.saved_model import SavedModelFormat
from keras_cra.export.tflite import TFLiteFormat

FORMATS = {f.name: f for f in (
    SavedModelFormat(),
    TFLiteFormat("float32", tolerance=1e-4),
    TFLiteFormat("float16", tolerance=1e-2),
    TFLiteFormat("dynamic"),
    TFLiteFormat("int8"),
    ONNXFormat(),
)}
# The formats a user chooses with --variants (the SavedModel is always written).
VARIANTS = tuple(n for n in FORMATS if n != "saved_model")
# The TFLite ones, written by default; `onnx` is chosen by name (it needs the [onnx] extra).
TFLITE_VARIANTS = tuple(n for n in VARIANTS if n.startswith(("float", "dynamic", "int8")))
DEFAULT_VARIANTS = TFLITE_VARIANTS
