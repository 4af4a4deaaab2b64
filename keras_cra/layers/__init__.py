"""Channel attention layers: CRA and the SE / ECA baselines."""

from keras_cra.layers.cra import CRA
from keras_cra.layers.cra import ChannelReassessmentAttention
from keras_cra.layers.cra import adaptive_max_pool
from keras_cra.layers.cra import builtin_pooling
from keras_cra.layers.eca import ECA
from keras_cra.layers.eca import EfficientChannelAttention
from keras_cra.layers.registry import ATTENTIONS
from keras_cra.layers.registry import get_attention
from keras_cra.layers.se import SE
from keras_cra.layers.se import SqueezeExcitation
