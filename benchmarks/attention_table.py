#!/usr/bin/env python3
"""`keras_cra.add_attention` on keras.applications models: the README table.

For each model (weights=None, offline): how many attention layers were
inserted, the parameters and MACs they add, and whether the result
round-trips through `.keras`, trains one `fit` step and converts to a
builtins-only TFLite model with Keras' outputs.

    python benchmarks/attention_table.py            # writes benchmarks/ATTENTION_TABLE.md
    python benchmarks/attention_table.py --size 96 --models MobileNetV2
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> add_attention arguments. DenseNet has no residual adds: CRA goes after the
# concatenation that closes each dense block.
MODELS = {
    "ResNet50": {},
    "ResNet50V2": {},
    "MobileNetV2": {},
    "MobileNetV3Small": {},
    "EfficientNetB0": {},
    "EfficientNetV2B0": {},
    "ConvNeXtTiny": {},
    "DenseNet121": dict(placement="after", layers=[
        "conv2_block6_concat", "conv3_block12_concat", "conv4_block24_concat",
        "conv5_block16_concat"]),
}


def row(name, size=224, attention="cra"):
    """One table row for `keras.applications.<name>` at `size` x `size`."""
    import keras

    import keras_cra
    from keras_cra.export import tflite
    from keras_cra.layers.base import ChannelGate

    start = time.time()
    base = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                             classes=10)
    new = keras_cra.add_attention(base, attention, **MODELS[name])
    gates = [l for m in [new] + [l for l in new.layers if isinstance(l, keras.Model)]
             for l in m.layers if isinstance(l, ChannelGate)]
    # Inputs on a preprocessed scale: with random weights, raw 0-255 pixels saturate the
    # softmax and the gradients underflow.
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    result = {
        "model": name, "attention_layers": len(gates),
        "params_added": int(new.count_params() - base.count_params()),
        "macs_added": int(sum(g.macs(g.input.shape) for g in gates)),
        "base_params": int(base.count_params()),
    }
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            keras.losses.sparse_categorical_crossentropy(np.array([1, 2]), new(x)))
    grads = tape.gradient(loss, [w for g in gates for w in g.trainable_weights])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        new.save(path)
        restored = keras.saving.load_model(path)
        result["round_trip"] = bool(np.allclose(restored.predict(x, verbose=0),
                                                new.predict(x, verbose=0), atol=1e-6))
    # Exports, before the fit step: one SGD step on random weights can saturate the softmax,
    # where float round-off between TFLite and TensorFlow flips whole probabilities.
    try:
        flat = tflite.convert(new, "float32")
        builtins = not any("Flex" in op for op in tflite.op_names(flat))
        close = np.allclose(tflite.run(flat, x[:1]), new.predict(x[:1], verbose=0), atol=1e-4)
        result["exports"] = builtins and close
    except Exception as e:  # reported in the table, not hidden
        result["exports"] = False
        result["export_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    # Fits: one model.fit step gives a finite loss, and the loss has a nonzero gradient
    # for every attention weight (ConvNeXt's LayerScale starts at 1e-6, so its gradients
    # are ~1e-13 and one SGD step can leave a float32 kernel unchanged).
    new.compile("sgd", "sparse_categorical_crossentropy")
    history = new.fit(x, np.array([1, 2]), epochs=1, verbose=0)
    result["fits"] = bool(np.isfinite(history.history["loss"][-1]) and all(
        g is not None and np.any(g.numpy() != 0) for g in grads))
    result["seconds"] = round(time.time() - start, 1)
    return result


def markdown(rows, size, attention):
    yes = lambda v: "yes" if v else "**no**"  # noqa: E731
    lines = [f"`keras_cra.add_attention(model, {attention!r})` on keras.applications models "
             f"(weights=None, {size}x{size} input, 10 classes). MACs added: the attention "
             "layers' own (pool reduction + gate multiply) for one image.", "",
             "| model | attention layers | params added | % of model | MACs added | "
             ".keras round trip | fit | builtins-only TFLite |",
             "|---|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['attention_layers']} | {r['params_added']:,} | "
                     f"{100 * r['params_added'] / r['base_params']:.1f}% | "
                     f"{r['macs_added'] / 1e6:.2f}M | {yes(r['round_trip'])} | "
                     f"{yes(r['fits'])} | {yes(r['exports'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--attention", default="cra")
    p.add_argument("--out", default=os.path.join(HERE, "ATTENTION_TABLE.md"))
    a = p.parse_args(argv)
    rows = []
    for name in a.models:
        rows.append(row(name, a.size, a.attention))
        print(rows[-1], flush=True)
    text = markdown(rows, a.size, a.attention)
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
