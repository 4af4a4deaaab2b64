"""The CRA model zoo, mirroring `keras.applications` (registry: `zoo`)."""

from keras_cra.applications import weights
from keras_cra.applications import zoo
from keras_cra.applications.mobilenet_v2 import CRAMobileNetV2
from keras_cra.applications.resnet import MODELS
from keras_cra.applications.resnet import ResNet
from keras_cra.applications.resnet import CRAResNet18
from keras_cra.applications.resnet import CRAResNet20
from keras_cra.applications.resnet import CRAResNet32
from keras_cra.applications.resnet import CRAResNet34
from keras_cra.applications.resnet import CRAResNet50
from keras_cra.applications.resnet import CRAResNet56
from keras_cra.applications.resnet import CRAResNet101
from keras_cra.applications.resnet import CRAResNet110
from keras_cra.applications.resnet import CRAResNet152
from keras_cra.applications.resnet import CRAResNeXt50
from keras_cra.applications.resnet import CRAResNeXt101
from keras_cra.applications.resnet import decode_predictions
from keras_cra.applications.resnet import feature_extractor
from keras_cra.backbone import Backbone
from keras_cra.applications.resnet import preprocess_input
from keras_cra.applications.zoo import get_model
