"""SavedModel export: `serving_default` (uint8 RGB in) and `serving_preprocessed`."""

import numpy as np

from keras_cra.export.base import ExportFormat
from keras_cra.export.serving import serving_functions


def write_saved_model(model, path):
    import keras
    import tensorflow as tf

    shape = tuple(model.input_shape[1:])
    from_preprocessed, from_uint8 = serving_functions(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", from_uint8,
        input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serving_preprocessed", from_preprocessed,
        input_signature=[tf.TensorSpec((None,) + shape, tf.float32, name="inputs")],
    )
    archive.write_out(path, verbose=False)


class SavedModelFormat(ExportFormat):
    name = "saved_model"
    artifact = "saved_model"
    tolerance = 1e-5

    def write(self, model, path, context):
        write_saved_model(model, path)

    def runner(self, path, num_threads=None):
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_preprocessed"]

        def run(x):
            return np.concatenate([fn(inputs=tf.constant(x[i:i + 256]))["output_0"].numpy()
                                   for i in range(0, len(x), 256)])

        return run
