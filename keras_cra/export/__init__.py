"""Export: SavedModel and TFLite (LiteRT), verified against Keras."""

from keras_cra.export import tflite
