import keras
import numpy as np
import pytest

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
