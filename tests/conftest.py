import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import sys  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    keras.config.set_dtype_policy("float32")
    keras.config.set_image_data_format("channels_last")
    yield
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    if "tensorflow" in sys.modules:
        # Training runs in-process turn on TF's op determinism, which is process-wide and makes
        # Keras quietly drop jit_compile=True in later tests.
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A tfds data folder with Fashion-MNIST prepared once (shared by xdist workers)."""
    from filelock import FileLock

    from keras_cra.data import fashion_mnist

    root = tmp_path_factory.getbasetemp().parent / "tfds_shared"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        fashion_mnist.builder(data_dir=str(root))
    return str(root)
