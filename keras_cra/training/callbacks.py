"""Callbacks of the training scripts."""

import json
import os

import keras


class RunState(keras.callbacks.Callback):
    """Records finished epochs in `state.json` after the checkpoints are written.

    `--resume` continues from `epochs_done` with the optimizer state and the
    step-based LR schedule restored from `last.keras`.
    """

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_epoch_end(self, epoch, logs=None):
        path = os.path.join(self.out, "state.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"epochs_done": epoch + 1, "logs": {k: float(v) for k, v in (logs or {}).items()}}, f)
        os.replace(path + ".tmp", path)
