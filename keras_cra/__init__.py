"""keras_cra: Channel Reassessment Attention for Keras 3."""

from keras_cra import applications
from keras_cra import inspect
from keras_cra import layers
from keras_cra.attach import add_attention

__version__ = "0.2.0"

import sys as _sys

if "keras_hub" in _sys.modules:  # keras-hub presets of keras_cra models load without more
    from keras_cra import hub  # noqa: F401
