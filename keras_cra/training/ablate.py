"""Does CRA help? Trains every (attention, seed) pair with one recipe and compares.

Every run is an ordinary `training/train.py` run (same function, same run
folder rules) in `OUT/runs/<attention>_seed<seed>`; the grid folder holds
`grid.json` (the shared recipe), `results.csv`, `summary.md` and two plots.
A finished run (its `metrics.json` exists) is skipped and a run stopped
mid-way is resumed, so an interrupted grid continues where it stopped.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import time

import numpy as np

from keras_cra.cli import UsageError, check_output_dir, read_json, run
from keras_cra.training import train as train_lib
from keras_cra.training import run_folder
from keras_cra.training.common import print_table
from keras_cra.training.config import config_from_args

GRID_FILE = "grid.json"
RESULTS_CSV = "results.csv"
SUMMARY_MD = "summary.md"
CURVES_PNG = "val_accuracy.png"
TOP1_PNG = "top1.png"
# Settings that may differ between invocations on one grid (they do not change results).
NOT_RECIPE = ("attention", "seed", "out", "resume", "verbose", "data_dir", "manual_dir",
              "strategy", "jit_compile")
COLUMNS = ("attention", "seed", "top1", "top5", "loss", "params", "macs", "epochs",
           "train_seconds", "images_per_second")
BASELINE = "none"


def parse_list(text, flag, cast=str):
    """`"a,b,c"` -> `[a, b, c]`; empty items and duplicates are errors naming `flag`."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise UsageError(f"{flag} must be a comma-separated list without empty items. "
                         f"Received: {flag} {text}")
    try:
        values = [cast(t) for t in items]
    except ValueError as e:
        raise UsageError(f"{flag} has an item that is not valid: {e}. Received: {flag} {text}") from e
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise UsageError(f"{flag} lists {', '.join(duplicates)} more than once. "
                         f"Received: {flag} {text}")
    return values


def check_grid(attentions, seeds):
    from keras_cra.layers.registry import ATTENTIONS, attention_choices

    if not attentions:
        raise UsageError("--attention must name at least one attention. Received: --attention ''")
    for name in attentions:
        if name != BASELINE and name not in ATTENTIONS:
            raise UsageError(f"--attention: unknown attention {name!r}; valid names: "
                             f"{attention_choices()}. Received: --attention {','.join(attentions)}")
    if not seeds:
        raise UsageError("--seeds must list at least one seed. Received: --seeds ''")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"--seeds must be integers >= 0. Received: --seeds "
                             f"{','.join(map(str, seeds))}")
    for flag, values in (("--attention", attentions), ("--seeds", seeds)):
        if len(set(values)) != len(values):
            raise UsageError(f"{flag} lists an item more than once. Received: {flag} "
                             f"{','.join(map(str, values))}")


def recipe_of(config):
    """The settings every run of a grid shares (a resolved TrainConfig)."""
    return {k: v for k, v in run_folder.json_value(dataclasses.asdict(config)).items()
            if k not in NOT_RECIPE}


def _check_grid_folder(out, recipe):
    """Refuses a folder holding another grid, or anything but a grid."""
    path = os.path.join(out, GRID_FILE)
    if os.path.exists(path):
        saved = read_json(path, "The grid's grid.json").get("recipe", {})
        differences = [f"--{k.replace('_', '-')} {recipe.get(k)!r} (the grid has {saved.get(k)!r})"
                       for k in sorted(set(recipe) | set(saved)) if recipe.get(k) != saved.get(k)]
        if differences:
            raise UsageError(
                f"{out} holds another ablation grid: " + "; ".join(differences)
                + ". Use its settings or choose another --out. Nothing was overwritten."
            )
        return
    others = set(os.listdir(out)) - {run_folder.LOCK_FILE} if os.path.isdir(out) else set()
    if others:
        raise UsageError(
            f"{out} is not empty and holds no ablation grid ({', '.join(sorted(others))}); "
            "choose another --out. Nothing was overwritten."
        )


def run_name(attention, seed):
    return f"{attention}_seed{seed}"


def time_path(runs_dir, attention, seed):
    # Beside the run folder: a run folder holds only train.py's files.
    return os.path.join(runs_dir, f"{run_name(attention, seed)}.time.json")


def _train_time_callback(path):
    """Keras callback: seconds of the training phase of each epoch (validation excluded)
    and its batch count, kept in `path` across resumes."""
    import keras

    class TrainTime(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = read_json(path, "a run's train_time.json")["epochs"] if os.path.exists(
                path) else {}

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.batches, self.seconds = time.perf_counter(), 0, None

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_test_begin(self, logs=None):
            if self.seconds is None:
                self.seconds = time.perf_counter() - self.start

        def on_epoch_end(self, epoch, logs=None):
            if self.seconds is None:
                self.seconds = time.perf_counter() - self.start
            self.epochs[str(epoch)] = {"seconds": self.seconds, "batches": self.batches}
            with open(path, "w") as f:
                json.dump({"epochs": self.epochs}, f)

    return TrainTime()


def _macs(config, attention, saved):
    """MACs of one image through the run's model (the same for every seed)."""
    from keras_cra.profiling import count_macs

    run_config = dataclasses.replace(config, attention=None if attention == BASELINE else attention,
                                     image_size=saved["image_size"])
    return int(count_macs(train_lib.build_model(run_config, saved["num_classes"], 3)))


def _row(run_dir, attention, seed, config, macs_by_attention):
    """One results.csv row from a finished run folder; `macs_by_attention` caches MACs."""
    metrics = read_json(os.path.join(run_dir, "metrics.json"), "a run's metrics.json")
    saved = read_json(os.path.join(run_dir, "config.json"), "a run's config.json")
    times = read_json(time_path(os.path.dirname(run_dir), attention, seed),
                      "a run's train time")["epochs"]
    seconds = sum(t["seconds"] for t in times.values())
    images = sum(t["batches"] for t in times.values()) * saved["batch_size"]
    if attention not in macs_by_attention:
        macs_by_attention[attention] = _macs(config, attention, saved)
    return {"attention": attention, "seed": seed, "top1": metrics["top1"], "top5": metrics["top5"],
            "loss": metrics["loss"], "params": metrics["params"],
            "macs": macs_by_attention[attention],
            "epochs": metrics["epochs"], "train_seconds": round(seconds, 1),
            "images_per_second": round(images / seconds, 1) if seconds else float("nan")}


def ablate(config, attentions, seeds, out, verbose=0, on_run=None):
    """Trains every (attention, seed) pair of a grid and writes its comparison.

    Args:
        config: a `TrainConfig`: the recipe every run shares (its
            `attention`, `seed` and `out` are ignored).
        attentions: list of attention names (`"none"` for no attention: the
            baseline of the differences).
        seeds: list of distinct integer seeds; a seed fixes the weight
            initialisation and the data order, the same for every attention.
        out: the grid folder.
        verbose: Keras' verbosity for each run.
        on_run: optional `fn(index, total, attention, seed, status)` called
            before each run (`status`: "train", "resume" or "done").

    Returns:
        `{"rows": [...], "summary": summarize(rows), "files": [...]}`.
    """
    check_grid(attentions, seeds)
    check_output_dir(out)
    base = dataclasses.replace(config, attention=None, seed=seeds[0], out=out, resume=False,
                               verbose=verbose).resolved()
    train_lib.validate(base)
    recipe = recipe_of(base)
    rows, macs_by_attention = [], {}
    _check_grid_folder(out, recipe)
    with run_folder.lock(out):
        _check_grid_folder(out, recipe)  # again, now that no other grid runs here
        if not os.path.exists(os.path.join(out, GRID_FILE)):
            with open(os.path.join(out, GRID_FILE), "w") as f:
                json.dump({"recipe": recipe}, f, indent=2)
        pairs = [(a, s) for a in attentions for s in seeds]
        for index, (attention, seed) in enumerate(pairs):
            run_dir = os.path.join(out, "runs", run_name(attention, seed))
            done = os.path.exists(os.path.join(run_dir, "metrics.json"))
            # A run with a checkpoint continues (also one whose state.json was never
            # written, or one stopped after its last epoch before its metrics.json).
            resume = not done and any(os.path.exists(os.path.join(run_dir, n))
                                      for n in ("state.json", "last.keras"))
            if on_run:
                on_run(index, len(pairs), attention, seed,
                       "done" if done else "resume" if resume else "train")
            if not done:
                run_config = dataclasses.replace(
                    base, attention=attention, seed=seed, out=run_dir, resume=resume)
                timer = _train_time_callback(time_path(os.path.join(out, "runs"), attention, seed))
                train_lib.train(run_config, extra_callbacks=[timer])
            rows.append(_row(run_dir, attention, seed, base, macs_by_attention))
        write_results(rows, os.path.join(out, RESULTS_CSV))
        summary = summarize(rows)
        with open(os.path.join(out, SUMMARY_MD), "w") as f:
            f.write(summary_markdown(summary, recipe))
        curves = {a: [validation_curve(os.path.join(out, "runs", run_name(a, s)))
                      for s in seeds] for a in attentions}
        plot_curves(curves, os.path.join(out, CURVES_PNG))
        plot_top1(summary, os.path.join(out, TOP1_PNG))
    files = [os.path.join(out, f) for f in (RESULTS_CSV, SUMMARY_MD, CURVES_PNG, TOP1_PNG)]
    return {"rows": rows, "summary": summary, "files": files}


def write_results(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def validation_curve(run_dir):
    """Validation top-1 per epoch of one run, from its history.csv."""
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return [float(r["val_accuracy"]) for r in csv.DictReader(f)]


def t_interval(values, confidence=0.95):
    """`(mean, half width)` of the Student-t interval of the mean; half width `None` for
    fewer than two values."""
    from scipy import stats

    values = np.asarray(values, dtype="float64")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    sem = values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


def summarize(rows, baseline=BASELINE):
    """Per attention: runs, mean/std of top-1 and top-5, cost, and the top-1 difference
    against `baseline` paired by seed, with a 95% Student-t interval.

    Returns:
        A list of dicts in the order attentions first appear in `rows`.
    """
    by = {}
    for r in rows:
        by.setdefault(r["attention"], {})[r["seed"]] = r
    base = by.get(baseline, {})
    out = []
    for attention, runs in by.items():
        top1 = [r["top1"] for r in runs.values()]
        entry = {
            "attention": attention, "runs": len(runs),
            "top1_mean": float(np.mean(top1)),
            "top1_std": float(np.std(top1, ddof=1)) if len(top1) > 1 else None,
            "top5_mean": float(np.mean([r["top5"] for r in runs.values()])),
            "params": int(np.mean([r["params"] for r in runs.values()])),
            "macs": int(np.mean([r["macs"] for r in runs.values()])),
            "images_per_second": float(np.mean([r["images_per_second"] for r in runs.values()])),
            "top1_ci": t_interval(top1)[1],
            "diff_mean": None, "diff_ci": None, "pairs": 0,
        }
        paired = sorted(set(runs) & set(base))
        if attention != baseline and paired:
            diffs = [runs[s]["top1"] - base[s]["top1"] for s in paired]
            entry["diff_mean"], entry["diff_ci"] = t_interval(diffs)
            entry["pairs"] = len(paired)
        out.append(entry)
    return out


def _pct(value, signed=False):
    return "-" if value is None else (f"{value * 100:+.2f}" if signed else f"{value * 100:.2f}")


def summary_markdown(summary, recipe):
    lines = [
        f"# Ablation: {recipe['model']} on {recipe['dataset']}", "",
        f"Recipe: train split `{recipe['train_split']}`, eval split `{recipe['eval_split']}`, "
        f"{recipe['epochs']} epochs, batch {recipe['batch_size']}, lr {recipe['lr']} "
        f"({recipe['schedule']}), weight decay {recipe['weight_decay']}.", "",
        "Top-1 and top-5 in %. Difference: top-1 minus the same seed's `none` run, mean over "
        "seeds with a 95% Student-t interval (paired by seed; `-` with fewer than two pairs). "
        "images/s: training images per second of training time (validation excluded).", "",
        "| attention | runs | top-1 mean | top-1 std | top-5 mean | top-1 - none | 95% CI | "
        "params | MACs | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        ci = "-" if e["diff_ci"] is None else (
            f"[{_pct(e['diff_mean'] - e['diff_ci'], True)}, {_pct(e['diff_mean'] + e['diff_ci'], True)}]")
        lines.append(
            f"| {e['attention']} | {e['runs']} | {_pct(e['top1_mean'])} | {_pct(e['top1_std'])} | "
            f"{_pct(e['top5_mean'])} | {_pct(e['diff_mean'], True)} | {ci} | {e['params']:,} | "
            f"{e['macs']:,} | {e['images_per_second']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_curves(curves, path):
    """Validation top-1 per epoch: mean line and min-max band over seeds, per attention."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for attention, runs in curves.items():
        n = min(len(r) for r in runs)
        values = np.array([r[:n] for r in runs]) * 100
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, values.mean(0), marker="o", label=f"{attention} ({len(runs)} seeds)")
        ax.fill_between(epochs, values.min(0), values.max(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Validation top-1: mean over seeds, band = min-max")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_top1(summary, path):
    """Final top-1 per attention: mean with its 95% Student-t interval."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    names = [e["attention"] for e in summary]
    means = [e["top1_mean"] * 100 for e in summary]
    errors = [(e["top1_ci"] or 0.0) * 100 for e in summary]
    ax.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=6)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Final top-1: mean and 95% t-interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def build_parser():
    p = argparse.ArgumentParser(
        description="Train every (attention, seed) pair with one recipe and compare them.")
    train_lib.add_train_args(p, skip=("attention", "seed", "out"))
    p.add_argument("--schedule", default="step", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", default=None)
    p.add_argument("--attention", default="none,se,eca,cra",
                   help="comma-separated attentions; 'none' is the baseline")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated distinct seeds")
    p.add_argument("--out", default="runs/ablation", help="the grid folder")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def command():
        attentions = parse_list(args.attention, "--attention")
        seeds = parse_list(args.seeds, "--seeds", int)
        config = train_lib.check_milestones(config_from_args(args, train_lib.TrainConfig))

        def report(index, total, attention, seed, status):
            print(f"[{index + 1}/{total}] attention={attention} seed={seed}: {status}", flush=True)

        result = ablate(config, attentions, seeds, args.out, verbose=config.verbose,
                        on_run=report)
        with open(os.path.join(args.out, SUMMARY_MD)) as f:
            print(f.read())
        print_table("Files", {os.path.basename(p): p for p in result["files"]})

    return run(command, resumable=True, interrupted=lambda: (
        f"interrupted; finished runs are kept in {args.out}: run the same command again to "
        "continue the grid (stopped runs are resumed)"))


if __name__ == "__main__":
    import sys

    sys.exit(main())
