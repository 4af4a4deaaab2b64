"""Shared pieces of the training CLIs: errors, strategies, determinism, tables."""

import json
import os

from keras_cra.cli import UsageError, check_output_dir, run  # noqa: F401 (re-exported)


def run_cli(fn, out=None):
    """Runs a resumable training command (see `keras_cra.cli.run`); on Ctrl-C or SIGTERM
    it prints how to go on from what the run folder holds (`out`: a function of no
    arguments giving the folder, or `None`)."""
    from keras_cra.training.run_folder import resume_hint

    return run(fn, resumable=True, interrupted=(lambda: resume_hint(out())) if out else None)


def configure_cpu_devices(n):
    """Splits the CPU into `n` logical devices (before TF initialises)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * n
    )


def get_strategy(name):
    """`auto` (Mirrored over >1 GPU, else default), `mirrored`, `multiworker`."""
    import tensorflow as tf

    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError(
                "--strategy multiworker needs the TF_CONFIG environment variable "
                "(cluster and task of this worker)."
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise UsageError(f"TF_CONFIG is not valid JSON: {e}") from e
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UsageError(
        f"--strategy must be auto, mirrored or multiworker. Received: {name!r}"
    )


def is_chief():
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (
        task.get("type") == "worker" and task.get("index", 0) == 0
        and "chief" not in config.get("cluster", {})
    )


def configure_determinism(seed):
    """Seeds Python, NumPy and TF, and asks TF for deterministic ops.

    Both are process-wide settings, made on purpose: a training run is
    reproducible and resumes exactly only with them.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()  # idempotent


def print_table(title, rows):
    """Prints a two-column table (rich if available)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for k, v in rows.items():
            print(f"  {k:<20} {v}")
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        table.add_row(str(k), f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


def build_optimizer(model):
    """Creates the compiled optimizer's variables now, before `fit`.

    Without a distribution strategy, Keras' TensorFlow trainer creates them
    inside the first traced train step, and TensorFlow then traces that step
    a second time: about 4 s more per run for CRAResNet20 on 2 cores.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return model


def build_loss_trackers(model, x, y):
    """Creates a compiled multi-output loss' trackers before `fit`.

    Keras creates one tracker per output loss at the first computed loss;
    inside the first traced train step that makes TensorFlow trace it twice
    (as `build_optimizer` says). One eager loss on `(x, y)`, then the
    metrics are reset.
    """
    model.compute_loss(x, y, model(x, training=False), None)
    model.reset_metrics()


def prepare_for_multiworker(model, strategy, example_batch):
    """Works around keras-team/keras#20585 (Keras 3 + MultiWorkerMirroredStrategy).

    `fit` first builds the model symbolically from a MEAN all-reduce of the
    first distributed batch, only to learn shapes; under
    MultiWorkerMirroredStrategy that eager reduce fails ("Attempt to convert
    a value (PerReplica...)"). We do the same symbolic build from a local
    batch under the strategy scope, and skip Keras' version for this model.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    _patch_multiworker_log_reduction()
    with strategy.scope():
        model._symbolic_build(data_batch=example_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    return model


def _patch_multiworker_log_reduction():
    """Second half of the keras-team/keras#20585 workaround.

    Under a multi-worker collective strategy Keras reduces each step's logs
    with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalar logs
    (loss, metrics). Reduce them elementwise across replicas (`axis=None`),
    which is what Keras does for single-worker MirroredStrategy. Other
    strategies and reductions are untouched.
    """
    import keras

    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    if not (3, 13) <= version < (4, 0):
        raise UsageError(
            "--strategy multiworker relies on a workaround of keras-team/keras#20585 written "
            f"for Keras 3.13 to 3.x; this is Keras {keras.__version__}."
        )
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if not all(hasattr(trainer, n) for n in ("reduce_per_replica",
                                             "_collective_all_reduce_multi_worker")):
        raise UsageError(
            "--strategy multiworker: Keras' TensorFlow trainer no longer has the functions "
            f"the keras-team/keras#20585 workaround patches (Keras {keras.__version__})."
        )
    if getattr(trainer.reduce_per_replica, "_keras_cra_patched", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._keras_cra_patched = True
    trainer.reduce_per_replica = reduce_per_replica
