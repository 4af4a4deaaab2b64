import os
import signal
import time

import keras
import numpy as np
import pytest

from keras_cra.cli import sigterm_as_keyboard_interrupt, sigterm_received
from keras_cra.training.callbacks import fit


class FailAtSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_fit_closes_the_csv_log_when_training_stops_on_an_error(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    logger = keras.callbacks.CSVLogger(str(tmp_path / "history.csv"))
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    with pytest.raises(KeyboardInterrupt):
        fit(model, [logger, FailAtSecondEpoch()], x=x, y=y, epochs=3, verbose=0)
    assert logger.csv_file.closed
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss") and rows[1].startswith("0,") and len(rows) == 2, rows
    # Without the helper Keras leaves the file open.
    logger = keras.callbacks.CSVLogger(str(tmp_path / "plain.csv"))
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[logger, FailAtSecondEpoch()])
    assert not logger.csv_file.closed
    logger.csv_file.close()


class SwallowSigterm(keras.callbacks.Callback):
    """SIGTERM arrives in the second batch, and its `KeyboardInterrupt` is caught where it
    is raised, as code that Python runs on behalf of C code may do."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1
        if self.batches == 2:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs at the next bytecode, inside this try
            except KeyboardInterrupt:
                pass


def test_fit_stops_after_a_sigterm_whose_interrupt_was_lost():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((32, 3), "float32"), np.zeros((32, 1), "float32")
    swallow = SwallowSigterm()
    with sigterm_as_keyboard_interrupt():
        with pytest.raises(KeyboardInterrupt):
            fit(model, [swallow], x=x, y=y, batch_size=4, epochs=5, verbose=0)
        assert sigterm_received()
    assert swallow.batches == 2  # stopped at the end of the batch the signal came in
    assert not sigterm_received()  # the flag lives only as long as the block
    # Without the signal, the same fit runs every batch of every epoch.
    swallow.batches = -100
    with sigterm_as_keyboard_interrupt():
        fit(model, [swallow], x=x, y=y, batch_size=4, epochs=5, verbose=0)
    assert swallow.batches == -100 + 5 * 8
