"""Callbacks of the training scripts."""

import math
import os

import keras

from keras_cra.cli import sigterm_received
from keras_cra.files import atomic_output, write_json_atomic


class _StopOnSigterm(keras.callbacks.Callback):
    # Raises the interrupt of a SIGTERM whose own `KeyboardInterrupt` was lost (see
    # `keras_cra.cli.sigterm_received`) at the next batch.
    def _check(self, *args, **kwargs):
        if sigterm_received():
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _check


def fit(model, callbacks, **kwargs):
    """`model.fit(callbacks=callbacks, **kwargs)` that closes its `CSVLogger` files however
    training ends (Keras closes them only when training finishes, not on an error or Ctrl-C),
    and stops as Ctrl-C does at the first batch after a SIGTERM, also one that arrived before
    training began."""
    try:
        history = model.fit(callbacks=[_StopOnSigterm(), *callbacks], **kwargs)
        if sigterm_received():
            raise KeyboardInterrupt
        return history
    finally:
        for callback in callbacks:
            csv_file = getattr(callback, "csv_file", None)
            if isinstance(callback, keras.callbacks.CSVLogger) and csv_file is not None:
                csv_file.close()


def _diverged(logs):
    loss = (logs or {}).get("loss")
    return loss is not None and not math.isfinite(float(loss))


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite.

    `diverged_at` is then `(epoch, step)`; the other callbacks of this module
    write nothing for that epoch, so the last good checkpoint stays.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged_at is None and _diverged(logs):
            self.diverged_at = (self._epoch, batch)
            self.model.stop_training = True


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model to `path` at the end of each epoch, atomically.

    The model is written to a temporary file beside `path`, then renamed over
    it (`keras_cra.files.atomic_output`), so a kill or a full disk during the
    write leaves the previous checkpoint intact.
    With `monitor`, only epochs that improve it (`mode="max"`) are saved,
    starting from `best` (the best value of a resumed run).
    """

    def __init__(self, path, monitor=None, best=None):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = -math.inf if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if _diverged(logs):
            return
        if self.monitor:
            value = logs.get(self.monitor)
            if value is None or not float(value) > self.best:
                return
            self.best = float(value)
        with atomic_output(self.path, overwrite=True) as tmp:
            self.model.save(tmp)


class RunState(keras.callbacks.Callback):
    """Records finished epochs in `state.json` after the checkpoints are written.

    `--resume` continues from `epochs_done` with the optimizer state and the
    step-based LR schedule restored from `last.keras`. `best` is the best
    value of `monitor` so far, so a resumed run keeps the right `best.keras`.
    """

    def __init__(self, out, monitor="val_accuracy", best=None):
        super().__init__()
        self.out = out
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if _diverged(logs):
            return
        value = logs.get(self.monitor)
        if value is not None and (self.best is None or float(value) > self.best):
            self.best = float(value)
        write_json_atomic(os.path.join(self.out, "state.json"),
                          {"epochs_done": epoch + 1, "best": {self.monitor: self.best},
                           "logs": {k: float(v) for k, v in logs.items()}})
