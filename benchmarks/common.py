"""Timing helpers shared by the benchmark scripts: interleaved A/B runs."""

import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def gate_floor_layer():
    """A Keras layer costing what every channel-attention gate must pay at least.

    `x * sigmoid(x[:, :1, :1, :])`: an input-dependent per-channel gate (one
    pixel, no pooling, no parameters) and the broadcast multiply. Used as the
    `floor` attention in benchmarks/run.py: no channel attention placed after
    a block's last BatchNorm can cost less than this.
    """
    import keras
    from keras import ops

    class GateFloor(keras.layers.Layer):
        def call(self, x):
            return x * ops.sigmoid(x[:, :1, :1, :])

    return GateFloor()


def one_pool_bound_layer():
    """CRA's cost if every map were pooled by one max pool: a bound, not CRA.

    The adaptive max pool is replaced by one VALID max pool with window and
    stride `size // 7` per axis, cropped to 7x7 (maps smaller than 7 keep
    CRA's pool); weights and gate math are CRA's. On maps of 7d rows and
    columns this is CRA exactly; off that grid its windows are not PyTorch's
    (they skip the last rows), but it is as cheap as a 7x7 max pool gets with
    builtin ops (one max pool reading the map once, the path CRA takes on the
    7d grid). Used as the `onepool` attention in `benchmarks/run.py --bound`:
    a cost that an exact layout of CRA's pooling is not expected to beat.
    """
    from keras import ops

    from keras_cra.layers import CRA

    class OnePoolBound(CRA):
        def pool(self, inputs, fast=True):
            a, b = self.spatial_axes
            s = self.pool_size
            h, w = inputs.shape[a], inputs.shape[b]
            if h < s or w < s:
                return super().pool(inputs, fast)
            y = ops.max_pool(inputs, (h // s, w // s), (h // s, w // s), "valid",
                             data_format=self.data_format)
            return y[:, :s, :s, :] if a == 1 else y[:, :, :s, :s]

    return OnePoolBound()


def slice_pool_bound_layer():
    """CRA's cost if pooling were free: a bound, not CRA.

    The adaptive max pool is replaced by a strided slice, every `size // 7`-th
    row and column cropped to 7x7 (maps smaller than 7 keep CRA's pool): the
    gate still depends on the map, but its "pool" reads 49 pixels per channel
    and its gradient writes them back, the least any gate computed from a 7x7
    grid of the map can cost; weights and gate math are CRA's. Used as the
    `slicepool` attention of `benchmarks/backends.py`: where `slicepool - floor`
    is as large as `cra - floor`, the excess is not in CRA's pooling, so no
    layout of the pooling removes it.
    """
    from keras_cra.layers import CRA

    class SlicePoolBound(CRA):
        def pool(self, inputs, fast=True):
            a, b = self.spatial_axes
            s = self.pool_size
            h, w = inputs.shape[a], inputs.shape[b]
            if h < s or w < s:
                return super().pool(inputs, fast)
            dh, dw = h // s, w // s
            if a == 1:
                return inputs[:, : s * dh : dh, : s * dw : dw, :]
            return inputs[:, :, : s * dh : dh, : s * dw : dw]

    return SlicePoolBound()


def read_pool_bound_layer():
    """The least an exact CRA pool can cost: a bound, not CRA.

    The adaptive max pool is replaced by each channel's maximum over the whole
    map, repeated on the 7x7 grid: one max reduction reading every pixel once,
    its gradient one full-size mask. Every exact 7x7 adaptive max pool reads
    every pixel at least once and writes a full-size gradient, so none does
    less work; weights and gate math are CRA's. Used as the `readpool`
    attention of `benchmarks/backends.py`: `cra - readpool` is the most any
    layout of CRA's pooling could save.
    """
    from keras import ops

    from keras_cra.layers import CRA

    class ReadPoolBound(CRA):
        def pool(self, inputs, fast=True):
            a, b = self.spatial_axes
            s = self.pool_size
            reps = [1, 1, 1, 1]
            reps[a] = reps[b] = s
            return ops.tile(ops.max(inputs, axis=(a, b), keepdims=True), reps)

    return ReadPoolBound()


def machine():
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    import keras
    import tensorflow as tf

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


def interleaved(fns, repeats, warmup=2, inner=1, before=None, rotate=False):
    """Times each of `fns` (a dict name -> callable) in A/B/A/B order.

    `before`, if given, runs untimed before each timed call (e.g. `gc.collect`).
    With `rotate`, round `r` starts at the `r`-th callable, so no callable always
    runs right after the same other one.

    Returns `{name: {"median_ms", "min_ms", "max_ms", "times_ms", "faults"}}` per call,
    `times_ms` listing the rounds in order (for per-round ratios, `round_ratio`) and
    `faults` the median count of the process's minor page faults per call (memory the
    allocator took fresh from the system and touched during the call).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    faults = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            if before is not None:
                before()
            f = minor_faults()
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t) / inner * 1000)
            faults[name].append((minor_faults() - f) / inner)
    return {
        name: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v)),
               "max_ms": float(np.max(v)), "times_ms": [float(t) for t in v],
               "faults": float(np.median(faults[name]))}
        for name, v in times.items()
    }


def minor_faults():
    """The process's minor page faults so far (all its threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def round_ratio(results, name, base):
    """Median over rounds of `name`'s time over `base`'s in the same round.

    Slow drifts of the machine (frequency, other load) hit both calls of a
    round alike, so this is steadier than a ratio of two medians.
    """
    a, b = results[name]["times_ms"], results[base]["times_ms"]
    return float(np.median(np.array(a) / np.array(b)))


def ratio_difference(results, name, other, base, level=0.9, samples=4000, seed=0):
    """`round_ratio(name) - round_ratio(other)` with a bootstrap interval over rounds.

    Rounds are resampled with replacement, the three calls of a round kept
    together, so the interval reflects how much the difference moves with the
    call-to-call noise of this run. When the rounds come from several processes
    (`merge_processes`: each entry's `process` names every round's process), the
    processes are resampled first and then the rounds within each, so the interval
    also holds what differs from one process to the next (where XLA's and malloc's
    buffers land).

    Returns:
        `(difference, low, high)`, the interval's bounds at `level`.
    """
    base_t = np.array(results[base]["times_ms"])
    a = np.array(results[name]["times_ms"]) / base_t
    b = np.array(results[other]["times_ms"]) / base_t
    rng = np.random.default_rng(seed)
    process = np.array(results[base].get("process", [0] * len(a)))
    groups = [np.flatnonzero(process == p) for p in np.unique(process)]
    d = np.empty(samples)
    for i in range(samples):
        picked = [groups[g] for g in rng.integers(0, len(groups), size=len(groups))]
        rounds = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in picked])
        d[i] = np.median(a[rounds]) - np.median(b[rounds])
    low, high = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    point = round_ratio(results, name, base) - round_ratio(results, other, base)
    return point, float(low), float(high)


def merge_processes(runs):
    """One `interleaved` result from the results of the same models in several processes.

    Returns:
        `{name: {"median_ms", "min_ms", "max_ms", "times_ms", "faults", "process"}}`:
        the rounds of every run in order, `process[i]` the run that gave round `i`,
        `faults` the median of the runs' medians.
    """
    merged = {}
    for name in runs[0]:
        times = [t for run in runs for t in run[name]["times_ms"]]
        merged[name] = {
            "median_ms": float(np.median(times)), "min_ms": float(np.min(times)),
            "max_ms": float(np.max(times)), "times_ms": times,
            "faults": float(np.median([run[name]["faults"] for run in runs])),
            "process": [p for p, run in enumerate(runs) for _ in run[name]["times_ms"]],
        }
    return merged


def verdict(low, high, target):
    """`met` if the whole interval is at or below `target`, `missed` if above it, else `undecided`."""
    if high <= target:
        return "met"
    if low > target:
        return "missed"
    return "undecided"


def ratio(a, b):
    return a["median_ms"] / b["median_ms"]


# Environment variables that change what a benchmark measures, echoed in its command line.
MEASURED_ENVIRONMENT = ("XLA_FLAGS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                        "LD_PRELOAD")


def command_line():
    """This run's command, prefixed by the set variables of `MEASURED_ENVIRONMENT`."""
    env = [f"{k}={os.environ[k]}" for k in MEASURED_ENVIRONMENT if os.environ.get(k)]
    return " ".join(env + ["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def results_header(title):
    """The opening lines of a results table: its title, the machine, commit and command."""
    info = machine()
    return [
        f"# keras_cra benchmark: {title}", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, nothing else running; "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']}; commit {git_revision()}.", "",
        f"Command: `{command_line()}`", "",
    ]


def write_results(folder, stem, text, payload):
    """Writes `folder/stem.md` (the table `text`) and `folder/stem.json` (`payload`),
    making `folder` if it does not exist."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write(text)
    write_json(os.path.join(folder, stem + ".json"), payload)
