"""Datasets (tfds, image folders, offline Fashion-MNIST) and input pipelines."""

from keras_cra.data.pipeline import DEFAULT_DATASET
from keras_cra.data.pipeline import DataError
from keras_cra.data.pipeline import DatasetInfo
from keras_cra.data.pipeline import load
from keras_cra.data.pipeline import make_dataset
from keras_cra.data.pipeline import normalize
from keras_cra.data.pipeline import steps_per_epoch
