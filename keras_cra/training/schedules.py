"""Learning-rate schedules of the authors' recipes."""

import math

import keras
from keras import ops

from keras_cra.errors import ArgumentError


def _tracing_graph():
    """The TensorFlow graph being traced, or `None` when executing eagerly or on another
    backend (where nothing is reused)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


@keras.saving.register_keras_serializable(package="keras_cra")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then step decay (x`gamma` at `milestones`) or cosine.

    Epoch boundaries are in optimizer steps (`steps_per_epoch` each), so the
    schedule is a pure function of `optimizer.iterations` and resumes
    exactly from a checkpoint.

    Args:
        base_lr: float, the learning rate after warmup.
        steps_per_epoch: int.
        epochs: int, total epochs (for cosine).
        schedule: `"step"` or `"cosine"`.
        milestones: epochs at which step decay multiplies by `gamma`.
        gamma: float, step decay factor. Defaults to `0.1`.
        warmup_epochs: float, linear warmup length. Defaults to `0`.
    """

    def __init__(self, base_lr, steps_per_epoch, epochs, schedule="step",
                 milestones=(), gamma=0.1, warmup_epochs=0):
        if schedule not in ("step", "cosine"):
            raise ArgumentError(
                f"`schedule` must be 'step' or 'cosine'. Received: schedule={schedule!r}"
            )
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.schedule = schedule
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_epochs = float(warmup_epochs)

    def __call__(self, step):
        # Keras' TensorFlow optimizer reads the learning rate once per decayed variable while
        # it traces a train step (weight decay), and every read would trace this schedule
        # again: ~10 ops x 74 variables for CRAResNet20, ~2-3 s of tracing per training run.
        # All reads in one traced graph are of the same step, so the first result is reused.
        graph = _tracing_graph()
        traced = getattr(self, "_traced", None)
        if graph is not None and traced and traced[0] is graph and traced[1] is step:
            return traced[2]
        lr = self._learning_rate(step)
        if graph is not None:
            self._traced = (graph, step, lr)
        return lr

    def __getstate__(self):
        # Copies and pickles never carry a traced graph's tensor.
        return {k: v for k, v in self.__dict__.items() if k != "_traced"}

    def _learning_rate(self, step):
        epoch = ops.cast(step, "float32") / self.steps_per_epoch
        if self.schedule == "step":
            factor = ops.convert_to_tensor(1.0)
            for m in self.milestones:
                factor = ops.where(epoch >= m, factor * self.gamma, factor)
        else:
            progress = ops.clip(
                (epoch - self.warmup_epochs) / max(self.epochs - self.warmup_epochs, 1e-8), 0, 1
            )
            factor = 0.5 * (1.0 + ops.cos(math.pi * progress))
        lr = self.base_lr * factor
        if self.warmup_epochs > 0:
            warm = self.base_lr * (epoch + 1.0 / self.steps_per_epoch) / self.warmup_epochs
            lr = ops.where(epoch < self.warmup_epochs, ops.minimum(warm, self.base_lr), lr)
        return lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "milestones": self.milestones,
            "gamma": self.gamma,
            "warmup_epochs": self.warmup_epochs,
        }
