"""What building a CRA model costs: `add_attention` and CRAMobileNetV2 against Keras' own copy.

`add_attention` returns an independent model (new layers, new variables holding copies of the
original's weights), so its floor is what Keras pays to make any independent copy:
`keras.models.clone_model` plus copying the weights. This script times, in one process and
interleaved, on keras.applications ResNet50 and MobileNetV2 (weights=None, 224x224):

- `clone_model + set_weights`: Keras' own independent copy;
- `copy_model`: keras_cra's copy (the same graph, no attention);
- `add_attention(..., "cra")`: the copy with a CRA gate at every residual block;
- `CRAMobileNetV2(...)`: the zoo builder (a plain MobileNetV2 copied with CRA in it).

Writes benchmarks/RESULTS_build.md. Run with nothing else on the machine.
"""

import argparse
import gc
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.common import command_line, git_revision, interleaved, machine  # noqa: E402


def cases():
    import keras

    import keras_cra
    from keras_cra.attach import copy_model

    def keras_copy(model):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy

    resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    return {
        "ResNet50": {
            "clone_model + set_weights": lambda: keras_copy(resnet),
            "copy_model": lambda: copy_model(resnet),
            "add_attention cra": lambda: keras_cra.add_attention(resnet, "cra"),
        },
        "MobileNetV2": {
            "clone_model + set_weights": lambda: keras_copy(mobilenet),
            "copy_model": lambda: copy_model(mobilenet),
            "CRAMobileNetV2": lambda: keras_cra.applications.CRAMobileNetV2(
                weights=None, input_shape=(224, 224, 3)),
        },
    }


def markdown(results, repeats):
    info = machine()
    lines = [
        "# Build cost of CRA models",
        "",
        f"`{command_line()}` at {git_revision()}: {info['cpu']}, {info['cores']} cores, "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']}; one process, the cases "
        f"of each model interleaved, median of {repeats} (after 1 warm-up each; `gc.collect()` untimed before each), nothing "
        "else running. Ratio: to Keras' own independent copy of the same model.",
        "",
        "| model | case | median s | min s | ratio to clone_model + set_weights |",
        "|---|---|---|---|---|",
    ]
    for model, times in results.items():
        base = times["clone_model + set_weights"]["median_ms"]
        for case, t in times.items():
            lines.append(f"| {model} | {case} | {t['median_ms'] / 1000:.3f} | "
                         f"{t['min_ms'] / 1000:.3f} | {t['median_ms'] / base:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS_build.md"))
    args = p.parse_args(argv)
    results = {model: interleaved(fns, args.repeats, warmup=1, before=gc.collect)
               for model, fns in cases().items()}
    text = markdown(results, args.repeats)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
