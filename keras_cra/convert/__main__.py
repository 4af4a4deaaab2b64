"""`python -m keras_cra.convert CHECKPOINT --model CRAResNet50 --out FILE.weights.h5`."""

import argparse
import shutil
import sys

# The system temp folder's entries of `--install` runs: `keras_cra_convert-PID-...`.
TMP_PREFIX = "keras_cra_convert-"


def main(argv=None):
    p = argparse.ArgumentParser(
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a = p.parse_args(argv)
    if not a.out and not a.install:
        p.error("give --out and/or --install")
    if a.out and not a.out.endswith(".weights.h5"):
        p.error(f"--out must end with .weights.h5. Received: {a.out}")

    from keras_cra.cli import run

    return run(lambda: convert(a))


def convert(a):
    import os
    import tempfile

    from keras_cra.applications import weights as weights_lib
    from keras_cra.applications import zoo
    from keras_cra.cli import UsageError, check_output_file
    from keras_cra.convert import ConversionError, from_torch_checkpoint
    from keras_cra.files import atomic_output, remove_stale

    if a.model not in zoo.ZOO:
        raise UsageError(f"Unknown model. Valid names: {zoo.names()}. "
                         f"Received: --model {a.model}")
    if a.install and (a.model, a.install) not in weights_lib.WEIGHTS:
        raise UsageError(
            f"No registered weights named {a.install!r} for {a.model}. Registered: "
            f"{sorted(n for m, n in weights_lib.WEIGHTS if m == a.model)}"
        )
    if a.out:
        out = check_output_file(a.out, "--out", overwrite=a.overwrite)
    if not os.path.isfile(a.checkpoint):
        raise UsageError(f"checkpoint does not exist or is not a file. Received: {a.checkpoint}")
    attention = {"auto": "auto", "cra": "cra", "none": None}[a.attention]
    model = from_torch_checkpoint(a.checkpoint, a.model, a.format, attention,
                                  near_identity_gates=a.near_identity_gates)
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
    if a.out:
        # Written beside the target, then renamed: a kill or a full disk never leaves half a
        # file, and an --out made meanwhile by another command is not replaced.
        with atomic_output(out, "--out", a.overwrite) as tmp:
            model.save_weights(tmp)
        print(f"wrote {out} ({model.count_params():,} parameters)")
    if a.install:
        remove_stale(tempfile.gettempdir(), TMP_PREFIX)
        tmp_dir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")
        try:
            tmp = os.path.join(tmp_dir, "converted.weights.h5")
            model.save_weights(tmp)
            print(f"installed as weights={a.install!r}: "
                  f"{weights_lib.install(tmp, a.model, a.install)}")
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
