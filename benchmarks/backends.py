"""CRA's cost on each Keras backend (TensorFlow, JAX, PyTorch), each in its own process.

For every backend: CRA-ResNet-50 at 224x224, `predict_on_batch` at batch 1 and 8, and
CRAResNet20 at 32x32, `train_on_batch` at batch 64 (the paper's CIFAR setting), for
attention = none / cra / se / eca / floor / onepool, interleaved after warm-up with the order
rotated each round; each ratio is the median over rounds of the time over `none`'s time in
the same round. `floor` and `onepool` (the `--bound` layer) as in RESULTS.md. CRA - floor and
CRA - SE come with a bootstrap interval over rounds and the target read against it
(met / missed / undecided). Writes benchmarks/RESULTS_backends.md and .json. Run with nothing else on the machine:

    python benchmarks/run.py --backends       # or: python benchmarks/backends.py
    python benchmarks/backends.py --quick     # fewer repetitions
    python benchmarks/backends.py --processes 5 --repeats 30   # five processes' rounds pooled
    python benchmarks/backends.py --cases r20_train_b64 --attentions none cra floor slicepool readpool

With `--processes`, one case's rounds come from several processes, which differ in where
XLA and malloc place their buffers, and the interval holds that difference too.
`--attentions` adds the bounds `slicepool` (CRA's cost if its pooling were free) and
`readpool` (the least an exact pool costs: one max over the map); see BOUND_TEXT.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

BACKENDS = ("tensorflow", "jax", "torch")
ATTENTIONS = ("none", "cra", "se", "eca", "floor", "onepool")
# Timed only when asked for (`--attentions`): CRA with its pool replaced by a strided slice
# (what CRA costs if pooling were free) or by one global max (the least an exact pool costs).
BOUNDS = ("slicepool", "readpool")
BOUND_TEXT = {
    "slicepool": "`slicepool` is CRA with its pool replaced by a strided slice of 7x7 pixels "
                 "(`benchmarks.common.slice_pool_bound_layer`): what CRA would cost if its "
                 "pooling were free.",
    "readpool": "`readpool` is CRA with its pool replaced by each channel's maximum over the "
                "whole map repeated on the 7x7 grid (`benchmarks.common.read_pool_bound_layer`): "
                "one reduction reading every pixel once, less work than any exact pool does; "
                "`cra - readpool` is the most a layout of CRA's pooling could save.",
}
REQUIRED = ("none", "cra", "floor")
# The targets: CRA - floor and CRA - SE (per case, None: no target).
TARGETS = {"predict": {"floor": 0.05, "se": 0.02}, "train": {"floor": 0.10, "se": None}}
CASES = {  # name: (model, size, batch, what)
    "r50_b1": ("CRAResNet50", 224, 1, "predict"),
    "r50_b8": ("CRAResNet50", 224, 8, "predict"),
    "r20_train_b64": ("CRAResNet20", 32, 64, "train"),
}


def worker(repeats, cases=tuple(CASES), attentions=ATTENTIONS):
    """Runs in a process whose KERAS_BACKEND is set; prints one JSON line."""
    import keras
    import numpy as np

    from benchmarks.common import interleaved
    from benchmarks.run import build

    rng = np.random.default_rng(0)
    results = {"backend": keras.backend.backend(), "cases": {}}
    for case in cases:
        model_name, size, batch, what = CASES[case]
        fns = {}
        for attention in attentions:
            model = build(model_name, attention, size)
            x = rng.normal(size=(batch, size, size, 3)).astype("float32")
            if what == "predict":
                fns[attention] = lambda m=model, xb=x: m.predict_on_batch(xb)
            else:
                y = rng.integers(0, 10, size=(batch,))
                model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                fns[attention] = lambda m=model, xb=x, yb=y: m.train_on_batch(xb, yb)
        reps = repeats if batch > 1 or what == "train" else repeats * 2
        results["cases"][case] = interleaved(fns, reps, warmup=3, rotate=True)
    print(json.dumps(results))


def run_backend(backend, repeats, cases=tuple(CASES), processes=1, attentions=ATTENTIONS):
    """One backend's results; with `processes > 1`, that many worker processes one after
    the other, their rounds merged per case (`merge_processes`)."""
    from benchmarks.common import merge_processes

    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT)
    runs = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                               "--repeats", str(repeats), "--cases", *cases,
                               "--attentions", *attentions], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            return {"backend": backend, "error": done.stderr.strip().splitlines()[-1:]}
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if processes == 1:
        return runs[0]
    return {"backend": backend, "processes": processes,
            "cases": {case: merge_processes([run["cases"][case] for run in runs])
                      for case in runs[0]["cases"]}}


def by_process(times, name="cra", other="floor"):
    """`name - other` (the round-ratio difference) in each process of merged results."""
    from benchmarks.common import round_ratio

    process = times["none"]["process"]
    cells = []
    for p in sorted(set(process)):
        one = {a: {"times_ms": [t for t, q in zip(v["times_ms"], process) if q == p]}
               for a, v in times.items()}
        cells.append(round_ratio(one, name, "none") - round_ratio(one, other, "none"))
    return cells


def difference_cell(times, other, target, name="cra"):
    from benchmarks.common import ratio_difference, verdict

    if other not in times:
        return "n/a"
    d, low, high = ratio_difference(times, name, other, "none")
    cell = f"{d:+.3f} [{low:+.3f}, {high:+.3f}]"
    return cell + (f" {verdict(low, high, target)}" if target is not None else "")


def markdown(results, repeats, processes=1):
    from benchmarks.common import results_header, round_ratio

    if processes == 1:
        where = "Each backend in its own process; in each"
    else:
        where = (f"Each backend in {processes} processes one after the other (each its own "
                 "placement of XLA's and malloc's buffers), their rounds pooled; in each")
    split = processes > 1
    timed = next((list(times) for r in results if "error" not in r
                  for times in r["cases"].values()), list(ATTENTIONS))
    names = [a for a in ATTENTIONS + BOUNDS if a in timed]
    bounds = [b for b in BOUNDS if b in names]
    lines = results_header("CRA on every Keras backend") + [
        f"{where}, the models of one case interleaved after 3 "
        f"warm-up calls, {repeats} rounds (batch 1: {2 * repeats}), the order rotated each "
        "round; a ratio is the median over rounds of a model's time over the time of the same "
        "model with `attention=None` in that round (`none ms`: its median). `floor` is "
        "`x * sigmoid(x[:, :1, :1, :])` at CRA's place: the least any channel attention "
        "costs."
        + (" `onepool` is CRA with its adaptive pool replaced by one max pool (the "
           "`--bound` layer of benchmarks/run.py; exact on 7d maps, not CRA elsewhere)."
           if "onepool" in names else "")
        + "".join(" " + BOUND_TEXT[b] for b in bounds), "",
        "`cra - floor` and `cra - se`: the difference of the two ratios, then its 90% bootstrap "
        "interval over rounds (rounds resampled whole"
        + ("; processes resampled first, then rounds within each" if split else "")
        + "), then the target's reading: `met` when "
        "the whole interval is at or below the target (inference: CRA - floor <= 0.05 and "
        "CRA - SE <= 0.02; training: CRA - floor <= 0.10), `missed` when it is above, "
        "`undecided` when the interval holds the target (this run's noise cannot tell).", "",
        "| backend | case | none ms | " + " | ".join(names[1:])
        + " | cra - floor | cra - se |" + "".join(f" {b} - floor |" for b in bounds)
        + (" cra - floor by process |" if split else "")
        + ("".join(f" {b} - floor by process |" for b in bounds) if split else ""),
        "|---|---|---|" + "---|" * (len(names) - 1) + "---|---|" + "---|" * (
            len(bounds) + split * (1 + len(bounds))),
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | error: {' '.join(r['error'])} |")
            continue
        for case, times in r["cases"].items():
            base = times["none"]["median_ms"]
            ratios = {a: round_ratio(times, a, "none") for a in names}
            targets = TARGETS[CASES[case][3]]
            cells = [f"{ratios[a]:.3f}" for a in names[1:]]
            cells += [difference_cell(times, "floor", targets["floor"]),
                      difference_cell(times, "se", targets["se"])]
            cells += [difference_cell(times, "floor", targets["floor"], b) for b in bounds]
            if split:
                cells += [", ".join(f"{d:+.3f}" for d in by_process(times, b))
                          for b in ["cra"] + bounds]
            lines.append(f"| {r['backend']} | {case} | {base:.1f} | " + " | ".join(cells) + " |")
    faults = [(r["backend"], case, times) for r in results if "error" not in r
              for case, times in r["cases"].items()]
    if faults and all("faults" in t[a] for _, _, t in faults for a in names):
        lines += [
            "", "Minor page faults per call (median over rounds): memory the allocator took "
            "fresh from the system during the call. They differ between models of one "
            "process by where the allocator's thresholds happen to sit, not by what the "
            "models compute.", "",
            "| backend | case | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names)]
        for backend, case, times in faults:
            lines.append(f"| {backend} | {case} | "
                         + " | ".join(f"{times[a]['faults']:.0f}" for a in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from benchmarks.common import write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--quick", action="store_true", help="5 repetitions")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes per backend, their rounds pooled")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS),
                   choices=list(ATTENTIONS + BOUNDS),
                   help="the models to time (none, cra and floor always among them)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=HERE)
    a = p.parse_args(argv)
    repeats = 5 if a.quick else a.repeats
    attentions = list(dict.fromkeys(list(REQUIRED) + a.attentions))
    if a.worker:
        return worker(repeats, a.cases, attentions)
    if a.processes < 1:
        p.error(f"--processes must be at least 1. Received: processes={a.processes}")
    results = [run_backend(b, repeats, a.cases, a.processes, attentions) for b in a.backends]
    text = markdown(results, repeats, a.processes)
    write_results(a.out, "RESULTS_backends", text, results)
    print(text)


if __name__ == "__main__":
    main()
