import copy
import math
import pickle

import numpy as np
import tensorflow as tf

from keras_cra.training.schedules import EpochSchedule


def reference(step, base_lr, steps_per_epoch, epochs, schedule, milestones, gamma, warmup):
    """The schedule written out in plain Python, per optimizer step."""
    epoch = step / steps_per_epoch
    if schedule == "step":
        lr = base_lr * gamma ** sum(epoch >= m for m in milestones)
    else:
        progress = min(max((epoch - warmup) / max(epochs - warmup, 1e-8), 0.0), 1.0)
        lr = base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if warmup > 0 and epoch < warmup:
        lr = min(base_lr * (epoch + 1 / steps_per_epoch) / warmup, base_lr)
    return lr


def test_values_against_a_plain_python_reference():
    for args in ((0.1, 4, 10, "step", [3, 6], 0.1, 0.0),
                 (0.1, 4, 10, "step", [3, 6], 0.1, 1.5),
                 (0.05, 3, 5, "cosine", [], 0.1, 0.5)):
        schedule = EpochSchedule(*args)
        for step in range(0, 4 * 11):
            np.testing.assert_allclose(float(schedule(step)), reference(step, *args),
                                       rtol=1e-5, atol=1e-8, err_msg=f"{args} step {step}")


def test_one_trace_reuses_the_first_result_and_eager_never_does():
    schedule = EpochSchedule(0.1, 4, 10, "cosine", warmup_epochs=1.0)
    step = tf.Variable(0, dtype="int64")
    # Eager: every call reads the step's current value (nothing cached).
    values = []
    for s in (0, 5, 20):
        step.assign(s)
        values.append(float(schedule(step)))
    np.testing.assert_allclose(values, [reference(s, 0.1, 4, 10, "cosine", [], 0.1, 1.0)
                                        for s in (0, 5, 20)], rtol=1e-6)

    other = tf.Variable(8, dtype="int64")

    @tf.function
    def reads():
        # As Keras' optimizer does: many reads of the same step in one traced step, then
        # one of another step tensor.
        same = [schedule(step) for _ in range(50)]
        return same, schedule(other)

    graph = reads.get_concrete_function().graph
    same, from_other = reads()
    # The 50 reads share one subgraph: the cosine appears twice (step, other), not 51 times.
    assert sum(op.type == "Cos" for op in graph.get_operations()) == 2
    step.assign(13)
    same, from_other = reads()  # the traced graph reads the variables again when run
    np.testing.assert_allclose([float(v) for v in same],
                               [reference(13, 0.1, 4, 10, "cosine", [], 0.1, 1.0)] * 50,
                               rtol=1e-6)
    np.testing.assert_allclose(float(from_other), reference(8, 0.1, 4, 10, "cosine", [], 0.1,
                                                            1.0), rtol=1e-6)
    # Copies and pickles of a schedule that has traced carry no graph tensor.
    for clone in (copy.deepcopy(schedule), pickle.loads(pickle.dumps(schedule))):
        assert not hasattr(clone, "_traced")
        assert clone.get_config() == schedule.get_config()
        np.testing.assert_allclose(float(clone(13)), float(schedule(13)), rtol=1e-6)
