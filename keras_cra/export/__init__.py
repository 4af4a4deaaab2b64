"""Export: SavedModel and TFLite (LiteRT), verified against Keras."""

from keras_cra.export import tflite
from keras_cra.export.exporter import ExportError
from keras_cra.export.exporter import export_model
