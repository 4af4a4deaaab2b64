"""Trains a small CRA network a few steps under a tf.distribute strategy.

Used to show that a strategy computes what single-device training computes
(the global batch is split across replicas; gradients are all-reduced).
Run as `python -m keras_cra.training.distributed_check --strategy NAME --out F`.
"""

import argparse
import json


def tiny_model():
    import keras

    from keras_cra.layers import CRA

    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = CRA(name="cra")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="dense")(x)
    return keras.Model(inputs, outputs)


def run(strategy_name, steps=3, global_batch=16, cpu_devices=1):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_cra.training.common import (
        configure_cpu_devices,
        get_strategy,
        prepare_for_multiworker,
    )

    if cpu_devices > 1:
        configure_cpu_devices(cpu_devices)
    strategy = get_strategy(strategy_name)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * global_batch, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, size=(steps * global_batch,))
    with strategy.scope():
        model = tiny_model()
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    prepare_for_multiworker(model, strategy, (x[:global_batch], y[:global_batch]))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "loss": float(history.history["loss"][-1]),
        "weights": [w.tolist() for w in model.get_weights()],
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="auto")
    p.add_argument("--cpu-devices", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    result = run(a.strategy, cpu_devices=a.cpu_devices)
    with open(a.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
