"""Convert PyTorch CRA-ResNet / torchvision ResNet checkpoints to Keras, safely."""

from keras_cra.convert.safe_load import CheckpointFormatError
from keras_cra.convert.safe_load import UnsafeCheckpointError
from keras_cra.convert.torch_weights import ConversionError
from keras_cra.convert.torch_weights import from_torch_checkpoint
