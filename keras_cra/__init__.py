"""keras_cra: Channel Reassessment Attention for Keras 3."""

from keras_cra import applications
from keras_cra import inspect
from keras_cra import layers
from keras_cra.attach import add_attention

__version__ = "0.2.0"
