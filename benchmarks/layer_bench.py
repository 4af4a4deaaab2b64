#!/usr/bin/env python3
"""CRA layer cost on a ResNet-50-sized stack of block outputs, vs identity and SE.

One compiled TF function applies an attention layer to each of the 16 block
outputs of ResNet-50 at 224x224 (3 x 56x56x256, 4 x 28x28x512, 6 x 14x14x1024,
3 x 7x7x2048); identity, CRA (fast path), CRA (general path) and SE are timed
in interleaved repetitions in one run and reported as ratios.

A second table times single TF ops on one 56x56x256 map (ResNet-50's first
stage, batch 1): CRA's max pool next to the cheapest possible full read of
the map (a global max) and the elementwise multiplies, in microseconds per op
(each op in its own compiled function, minus the call overhead of a
function that reads one element).

    python benchmarks/layer_bench.py [--batch 1] [--repeats 30]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import interleaved, machine  # noqa: E402
from keras_cra.layers import CRA, SqueezeExcitation  # noqa: E402

R50_BLOCKS = [(56, 256)] * 3 + [(28, 512)] * 4 + [(14, 1024)] * 6 + [(7, 2048)] * 3


def stack(kind, batch):
    shapes = [(batch, s, s, c) for s, c in R50_BLOCKS]
    layers = []
    for shape in shapes:
        if kind.startswith("cra"):
            layer = CRA()
        elif kind == "se":
            layer = SqueezeExcitation()
        else:
            layer = None
        if layer is not None:
            layer.build(shape)
        layers.append(layer)

    @tf.function(jit_compile=False)
    def run(xs):
        outs = []
        for layer, x in zip(layers, xs):
            if layer is None:
                outs.append(x * 1.0)
            elif kind == "cra_general":
                outs.append(x * layer.gate(x, fast=False))
            else:
                outs.append(layer(x))
        return outs

    return run


def single_ops(calls=2000, rounds=5):
    """Microseconds per op on one (1, 56, 56, 256) map, call overhead removed."""
    x = tf.constant(np.random.default_rng(0).normal(size=(1, 56, 56, 256)).astype("float32"))
    gate = tf.constant(np.random.default_rng(1).random(size=(1, 1, 1, 256)).astype("float32"))
    ops_ = {
        "call overhead (one element)": lambda t: t[0, 0, 0, 0] + 1.0,
        "global max (the cheapest full read)": lambda t: tf.reduce_max(t),
        "CRA pool: 8x8 max pool, stride 8": lambda t: tf.nn.max_pool2d(t, 8, 8, "VALID"),
        "multiply by a scalar": lambda t: t * 2.0,
        "multiply by a channel gate (CRA, SE, ECA)": lambda t: t * gate,
    }
    fns = {name: (lambda fn=tf.function(f): fn(x)) for name, f in ops_.items()}
    # The best of `rounds` repetitions of `calls` calls each, per call.
    us = {name: r["min_ms"] * 1000 for name, r in
          interleaved(fns, rounds, warmup=50, inner=calls).items()}
    base = us.pop("call overhead (one element)")
    return {name: t - base for name, t in us.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(size=(a.batch, s, s, c)).astype("float32")) for s, c in R50_BLOCKS]
    fns = {kind: (lambda f=stack(kind, a.batch): f(xs))
           for kind in ("identity", "cra", "cra_general", "se")}
    result = interleaved(fns, a.repeats, warmup=3)
    info = machine()
    print(f"# CRA layer benchmark: ResNet-50 block outputs, batch {a.batch}, "
          f"{info['cores']} cores, TF {info['tensorflow']}")
    print("| layer | median ms | min-max ms | / identity | / SE |")
    print("|---|---|---|---|---|")
    for kind, r in result.items():
        print(f"| {kind} | {r['median_ms']:.3f} | {r['min_ms']:.3f}-{r['max_ms']:.3f} | "
              f"{r['median_ms'] / result['identity']['median_ms']:.2f} | "
              f"{r['median_ms'] / result['se']['median_ms']:.2f} |")
    print()
    print("| single op on one 1x56x56x256 map | us per op |")
    print("|---|---|")
    for name, us in single_ops().items():
        print(f"| {name} | {us:.0f} |")
    return result


if __name__ == "__main__":
    main()
