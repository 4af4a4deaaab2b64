"""`keras-cra COMMAND [ARGS]`: every command of the package, installed as one console script.

Each command is also `python -m MODULE` (the modules below) and, in a clone, a script in
`training/` or `applications/`.
"""

import importlib
import sys

# name: (module with `main(argv)`, one line of help)
COMMANDS = {
    "train": ("keras_cra.training.train", "train a zoo model with model.fit (exact --resume)"),
    "finetune": ("keras_cra.training.finetune", "fine-tune pretrained weights on a dataset"),
    "evaluate": ("keras_cra.training.evaluate", "top-1/top-5, loss and confusion matrix"),
    "export": ("keras_cra.export.cli", "SavedModel + TFLite variants, verified against Keras"),
    "convert": ("keras_cra.convert.__main__", "convert the authors' PyTorch checkpoints"),
    "classify": ("keras_cra.inference", "classify images with a .tflite/SavedModel/.keras"),
    "detect": ("keras_cra.detection.inference", "draw an exported detector's boxes"),
    "train-detector": ("keras_cra.training.detect", "train a RetinaNet on a CRA backbone"),
    "ablate": ("keras_cra.training.ablate", "does CRA help? a grid of attentions x seeds"),
    "demo": ("keras_cra.training.demo", "the main job end to end on Fashion-MNIST"),
}


def usage():
    from keras_cra import __version__

    width = max(map(len, COMMANDS))
    lines = [f"usage: keras-cra COMMAND [ARGS]   (keras_cra {__version__})", "",
             "Channel Reassessment Attention for Keras 3. Commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "keras-cra COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from keras_cra import __version__

        print(f"keras_cra {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command. Valid commands: {', '.join(COMMANDS)}. "
              f"Received: {name}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    program, sys.argv[0] = sys.argv[0], f"keras-cra {name}"  # argparse's prog
    try:
        return module.main(rest)
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    sys.exit(main())
