"""A run folder: the files a training run keeps, its lock, and how a run goes on.

Every training command (train, finetune, detect, ablate) writes into a run
folder through these functions: `lock` while it runs, `prepare` before its
first epoch (a new run, a replaced unfinished run, or `--resume` with the
settings of the run's `config.json`), the checkpoint's own epoch count when
`state.json` is behind, and `resume_hint` when it is interrupted. Writes
are atomic (`keras_cra.files`).
"""

import contextlib
import dataclasses
import json
import os
import shutil

from keras_cra.errors import UsageError
from keras_cra.files import PARTIAL, check_output_dir, read_json, remove_stale_partials
from keras_cra.training.config import flag, progress_verbosity

# Written into every `make demo` run folder, so a rerun of the demo replaces
# only a folder the demo itself made (a user's --out is never deleted).
DEMO_MARKER = ".keras_cra_demo"
# Held by a training for as long as it runs; a second one on the same folder is refused.
LOCK_FILE = ".lock"
# A detector run's picture of its predictions.
PREDICTIONS_PNG = "predictions.png"
# Files a run folder holds; a folder holding anything else is never replaced.
RUN_FILES = {"config.json", "state.json", "last.keras", "best.keras", "history.csv",
             "metrics.json", "logs", PREDICTIONS_PNG, LOCK_FILE, DEMO_MARKER}
# Settings that `--resume` may change; every other difference is an error.
RESUME_MAY_CHANGE = ("out", "resume", "verbose", "data_dir", "manual_dir", "strategy",
                     "jit_compile")


@contextlib.contextmanager
def lock(out):
    """Makes the run folder `out` and holds its lock file while the block runs."""
    import filelock

    check_output_dir(out)
    os.makedirs(out, exist_ok=True)
    held = filelock.FileLock(os.path.join(out, LOCK_FILE), timeout=0)
    try:
        held.acquire()
    except filelock.Timeout as e:
        raise UsageError(
            f"Another training is running in {out} (it holds {os.path.join(out, LOCK_FILE)}); "
            "wait for it or choose another --out."
        ) from e
    try:
        yield
    finally:
        held.release()


def is_transient(name):
    """A temporary file or lock that one of our writers leaves when it is killed."""
    return name.startswith(".") and (PARTIAL in name or name.endswith(".lock"))


def contents(out):
    """The run's own files in `out` (no temporaries, lock or demo marker)."""
    if not os.path.isdir(out):
        return set()
    return {n for n in os.listdir(out) if not is_transient(n)} - {LOCK_FILE, DEMO_MARKER}


def is_unfinished(out):
    """A run folder whose first epoch never finished (e.g. a bad flag or a NaN loss stopped it)."""
    files = contents(out)
    return ("config.json" in files and not {"state.json", "last.keras"} & files
            and files <= RUN_FILES)


def json_value(value):
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def resume_differences(config, saved):
    """The settings of `config` that differ from a run's saved `config.json`.

    `None` means unset (keep the run's value).
    """
    return [f"{flag(k)} {getattr(config, k)!r} (the run has {saved.get(k)!r})"
            for k in (f.name for f in dataclasses.fields(config))
            if k not in RESUME_MAY_CHANGE and k in saved and getattr(config, k) is not None
            and json_value(getattr(config, k)) != saved[k]]


def prepare(config):
    """Checks the run folder `config.out` (under the caller's `lock`).

    A new run needs a folder without a run, or one whose run never finished
    an epoch (that run is removed); `config.resume` needs a run whose saved
    settings match `config` (except `RESUME_MAY_CHANGE`).

    Returns:
        `(first epoch to run, best val_accuracy so far or None)`; the epoch is
        `None` when the run has a checkpoint but no `state.json` (read it from
        the checkpoint: `checkpoint_epochs`).
    """
    out = config.out
    for name in ("last.keras", "best.keras", "state.json", "metrics.json", "config.json"):
        remove_stale_partials(os.path.join(out, name))  # left by a kill -9
    if config.resume:
        config_path = os.path.join(out, "config.json")
        if not os.path.exists(config_path):
            raise UsageError(f"Cannot resume: {out} holds no run (no config.json).")
        if is_unfinished(out):
            raise UsageError(
                f"Cannot resume: no epoch of the run in {out} finished. Start it again "
                "without --resume (the unfinished run is replaced)."
            )
        saved = read_json(config_path, "The run's config.json")
        if not os.path.exists(os.path.join(out, "last.keras")):
            raise UsageError(f"Cannot resume: no checkpoint {os.path.join(out, 'last.keras')}.")
        state_path = os.path.join(out, "state.json")
        # No state.json beside a checkpoint: the state write of a finished epoch failed (a
        # full disk, a kill between the two writes); the checkpoint tells the epoch.
        state = (read_json(state_path, "The run's state.json") if os.path.exists(state_path)
                 else {"epochs_done": None})
        differences = resume_differences(config, saved)
        if differences:
            raise UsageError(
                f"Cannot resume the run in {out} with other settings: "
                + "; ".join(differences)
                + ". Leave them out to keep the run's settings."
            )
        if state["epochs_done"] is not None and not isinstance(state["epochs_done"], int):
            raise UsageError(f"The run's state.json has no epochs_done: {out}.")
        return state["epochs_done"], (state.get("best") or {}).get("val_accuracy")
    if is_unfinished(out):
        for name in contents(out) | {n for n in os.listdir(out) if is_transient(n)
                                     and n != LOCK_FILE}:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif contents(out):
        raise UsageError(
            f"{out} already holds a run (or other files); choose another {flag('out')}, or "
            f"pass {flag('resume')} to continue it. Nothing was overwritten."
        )
    return 0, None


def checkpoint_epochs(path, steps):
    """How many epochs of `steps` steps the optimizer of a `.keras` checkpoint has run
    (read from the file without building the model)."""
    import zipfile

    import h5py
    import numpy as np

    try:
        with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f:
            with h5py.File(f, "r") as h5:
                iterations = None

                def find(name, obj):
                    nonlocal iterations
                    if iterations is None and name.startswith("optimizer/") and isinstance(
                            obj, h5py.Dataset) and obj.shape == () and "int" in str(obj.dtype):
                        iterations = int(np.asarray(obj))

                h5.visititems(find)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"Cannot resume: the run's last.keras is not a readable .keras model "
                         f"(truncated, corrupt or not a model: {type(e).__name__}). "
                         f"Received: {path}") from e
    if iterations is None or iterations % steps:
        raise UsageError(
            f"Cannot resume: the run's checkpoint {path} ends inside an epoch (optimizer step "
            f"{iterations}, {steps} steps per epoch); it was not written by this run.")
    return iterations // steps


def history_best(out, epochs, monitor="val_accuracy"):
    """The best `monitor` value in the first `epochs` rows of the run's `history.csv`."""
    import csv

    try:
        with open(os.path.join(out, "history.csv")) as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    values = [float(r[monitor]) for r in rows if r.get(monitor) not in (None, "")
              and r.get("epoch", "").isdigit() and int(r["epoch"]) < epochs]
    return max(values, default=None)


def config_for_resume(args, given, config_class):
    """With `--resume`, the run's saved settings, overridden by the flags `given`."""
    path = os.path.join(args.out, "config.json")
    saved = read_json(path, "The run's config.json") if os.path.exists(path) else {}
    names = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in saved.items() if k in names}
    values.update({k: getattr(args, k) for k in names if k in given or k not in values})
    values["verbose"] = progress_verbosity(getattr(args, "verbose", None))
    return config_class(**values)


def resume_hint(folder):
    """How to go on with the run folder `folder` after an interruption."""
    if folder and not os.path.exists(os.path.join(folder, "state.json")) and not os.path.exists(
            os.path.join(folder, "last.keras")):
        return (f"interrupted before the first epoch finished: nothing to resume in {folder}; "
                "run the same command again (without --resume) to start over, which replaces "
                "the unfinished run")
    return (f"interrupted; the last finished epoch is kept in {folder}: continue with the same "
            "command and --resume")
