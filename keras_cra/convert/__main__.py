"""`python -m keras_cra.convert CHECKPOINT --model CRAResNet50 --out FILE.weights.h5`."""

import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m keras_cra.convert",
        description="Convert a PyTorch checkpoint (the CRA authors' best_model.pkl or a "
                    "torchvision ResNet state_dict) to Keras weights. The file is read "
                    "without executing any code from it.",
    )
    p.add_argument("checkpoint")
    p.add_argument("--model", default="CRAResNet50")
    p.add_argument("--format", default="auto", choices=["auto", "authors", "torchvision"])
    p.add_argument("--out", default=None, help="output .weights.h5 file")
    p.add_argument("--install", default=None, metavar="NAME",
                   help="also install as registered weights NAME (e.g. imagenet, torchvision) "
                        "into the Keras cache")
    p.add_argument("--near-identity-gates", action="store_true",
                   help="torchvision weights in a CRA model: start CRA gates near 1")
    p.add_argument("--attention", default="auto", choices=["auto", "cra", "none"])
    a = p.parse_args(argv)
    if not a.out and not a.install:
        p.error("give --out and/or --install")
    if a.out and not a.out.endswith(".weights.h5"):
        p.error(f"--out must end with .weights.h5. Received: {a.out}")

    import os
    import tempfile

    from keras_cra.applications import weights as weights_lib
    from keras_cra.convert import (
        CheckpointFormatError,
        ConversionError,
        UnsafeCheckpointError,
        from_torch_checkpoint,
    )

    attention = {"auto": "auto", "cra": "cra", "none": None}[a.attention]
    try:
        if a.install and (a.model, a.install) not in weights_lib.WEIGHTS:
            raise ConversionError(
                f"No registered weights named {a.install!r} for {a.model}. Registered: "
                f"{sorted(n for m, n in weights_lib.WEIGHTS if m == a.model)}"
            )
        model = from_torch_checkpoint(a.checkpoint, a.model, a.format, attention,
                                      near_identity_gates=a.near_identity_gates)
        out = a.out or os.path.join(tempfile.mkdtemp(), "converted.weights.h5")
        model.save_weights(out)
        print(f"wrote {out} ({model.count_params():,} parameters)")
        if a.install:
            from keras_cra.layers import ChannelReassessmentAttention

            entry = weights_lib.WEIGHTS[(a.model, a.install)]
            has_cra = any(isinstance(l, ChannelReassessmentAttention) for l in model.layers)
            if has_cra != (entry.attention == "cra"):
                raise ConversionError(
                    f"Registered weights {a.install!r} are for a model with attention="
                    f"{entry.attention!r}, but the converted model "
                    f"{'has' if has_cra else 'has no'} CRA layers (see --attention)."
                )
            print(f"installed as weights={a.install!r}: {weights_lib.install(out, a.model, a.install)}")
    except (UnsafeCheckpointError, CheckpointFormatError, ConversionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
