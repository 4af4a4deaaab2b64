"""The functions an export serves: probabilities from preprocessed or uint8 images."""

from keras_cra.applications.imagenet import IMAGENET_MEAN, IMAGENET_STD

# What every export's inputs expect (written to metadata.json).
PREPROCESSING = {
    "mode": "torch",
    "description": "RGB uint8 -> x / 255, minus mean, divided by std (per channel)",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


def outputs_probabilities(model):
    """Whether the model's output is already a softmax."""
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax


def serving_functions(model):
    """`(probabilities(preprocessed float), probabilities(uint8 RGB))` TF functions."""
    import tensorflow as tf

    from keras_cra.data.pipeline import normalize

    softmax = not outputs_probabilities(model)

    def from_preprocessed(x):
        y = model(x, training=False)
        y = tf.cast(y, tf.float32)
        return tf.nn.softmax(y) if softmax else y

    def from_uint8(images):
        return from_preprocessed(normalize(images, "torch"))

    return from_preprocessed, from_uint8


def probability_model(model):
    """A Keras model returning probabilities (for TFLite conversion)."""
    import keras

    if outputs_probabilities(model):
        return model
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(
        model.output)
    return keras.Model(model.inputs, outputs, name=model.name + "_probabilities")
