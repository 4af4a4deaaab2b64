"""Where a PyTorch-backend CRA-ResNet-50 inference call spends its time, op by op.

For attention = none / floor / se / cra, built in one torch process and interleaved as in
benchmarks/backends.py (order rotated each round): each `predict_on_batch` at batch 8 on
224x224 inputs is profiled with `torch.profiler`. Every aten op's self time goes to
`attention` when it runs inside an attention layer's call (each wrapped in a
`record_function`), else to `other`, by op name; the table gives medians over `--rounds`,
with the process's minor page faults per call (memory the allocator took fresh from the
system and touched). Each `--env` value is one more run with those environment settings
(by default glibc malloc's mmap and trim thresholds held fixed, so that freed activations
are reused rather than returned to the system), to show how the allocator moves the
models' times. Writes benchmarks/RESULTS_torch_profile.md and .json. Run with nothing else
on the machine:

    python benchmarks/torch_profile.py
"""

import argparse
import collections
import functools
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ATTENTIONS = ("none", "floor", "se", "cra")
# The largest activation at batch 8 (8x112x112x64 float32) is under 32 MiB, glibc's
# largest mmap threshold: with these, every activation comes from the reused heap.
FIXED_MALLOC = "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184"
TOP_OPS = 10
WARMUP = 3
LABELS = {"": "default", FIXED_MALLOC: "fixed malloc"}


def wrap_attention_calls(model, attention_layers, label="attention"):
    """Makes each named layer's call run inside `record_function(label)`."""
    from torch.profiler import record_function

    for layer in model.layers:
        if layer.name in attention_layers:
            def call(*args, _call=layer.call, **kwargs):
                with record_function(label):
                    return _call(*args, **kwargs)
            layer.call = call


def op_times(events, label="attention"):
    """`{op: self ms}` of a profile's aten ops, `op` prefixed `label:` inside `label`."""
    times = collections.Counter()
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name != label:
            parent = parent.cpu_parent
        times[(f"{label}:" if parent is not None else "") + e.name] += e.self_cpu_time_total / 1000
    return times


def worker(rounds, batch=8, size=224, model_name="CRAResNet50"):
    """Runs in a torch-backend process; returns the profile as data."""
    import keras
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.common import interleaved, minor_faults
    from benchmarks.run import build

    plain = {layer.name for layer in build(model_name, "none", size).layers}
    models, layers = {}, {}
    for attention in ATTENTIONS:
        model = build(model_name, attention, size)
        names = {layer.name for layer in model.layers
                 if not isinstance(layer, keras.layers.InputLayer)} - plain
        wrap_attention_calls(model, names)
        models[attention], layers[attention] = model, len(names)
    x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    samples = {a: [] for a in ATTENTIONS}

    def profiled(attention):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            faults, t = minor_faults(), time.perf_counter()
            models[attention].predict_on_batch(x)
            wall, faults = (time.perf_counter() - t) * 1000, minor_faults() - faults
        samples[attention].append(dict(op_times(prof.events()), wall=wall, faults=faults))

    interleaved({a: functools.partial(profiled, a) for a in ATTENTIONS}, rounds,
                warmup=WARMUP, rotate=True)
    # The warm-up calls were profiled too; the summaries read the rounds only.
    return {a: {"attention_layers": layers[a], **summary(samples[a][WARMUP:])}
            for a in ATTENTIONS}


def summary(samples):
    """Medians over rounds: wall ms, faults, attention / other op ms and each op's ms."""
    import numpy as np

    def median(values):
        return float(np.median(values))

    names = sorted(set().union(*samples) - {"wall", "faults"})
    return {
        "wall_ms": median([s["wall"] for s in samples]),
        "faults": median([s["faults"] for s in samples]),
        "attention_ms": median([sum(v for k, v in s.items() if k.startswith("attention:"))
                                for s in samples]),
        "other_ms": median([sum(v for k, v in s.items() if k.startswith("aten::"))
                            for s in samples]),
        "ops": {k: median([s.get(k, 0.0) for s in samples]) for k in names},
    }


def run(rounds, env="", batch=8, size=224):
    settings = dict(item.split("=", 1) for item in shlex.split(env))
    process_env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=ROOT, **settings)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--rounds",
                           str(rounds), "--batch", str(batch), "--size", str(size)],
                          env=process_env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"profiling failed: {done.stderr[-2000:]}")
    return {"env": env, "batch": batch, "size": size,
            "models": json.loads(done.stdout.strip().splitlines()[-1])}


def markdown(results, rounds):
    from benchmarks.common import results_header

    lines = results_header("a PyTorch-backend CRA-ResNet-50 inference call, op by op") + [
        f"`predict_on_batch`, batch {results[0]['batch']}, "
        f"{results[0]['size']}x{results[0]['size']}; the four models in one process, interleaved "
        f"after {WARMUP} warm-up calls, {rounds} profiled rounds, the order rotated each round. "
        "Medians over rounds of: the profiled call's wall time (the profiler's own cost "
        "included), the self times of the aten ops inside the attention layers' calls "
        "(`attention ms`) and of all others (`other ms`), and the minor page faults per "
        "call. Environments: `fixed malloc` is `" + FIXED_MALLOC + "`.", "",
        "| environment | attention | wall ms | attention ms | other ms | page faults |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for attention, m in r["models"].items():
            lines.append(f"| {LABELS.get(r['env'], r['env'])} | {attention} | {m['wall_ms']:.1f} | "
                         f"{m['attention_ms']:.1f} | {m['other_ms']:.1f} | {m['faults']:.0f} |")
    for r in results:
        models = r["models"]
        top = sorted(models["cra"]["ops"], key=lambda k: -max(
            m["ops"].get(k, 0.0) for m in models.values()))[:TOP_OPS]
        lines += ["", f"The {TOP_OPS} slowest ops, self ms "
                  f"({LABELS.get(r['env'], r['env'])} environment):", "", "| op | " + " | ".join(models) + " |",
                  "|---|" + "---|" * len(models)]
        for op in top:
            lines.append(f"| `{op}` | " + " | ".join(
                f"{m['ops'].get(op, 0.0):.1f}" for m in models.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from benchmarks.common import write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--env", nargs="*", default=[FIXED_MALLOC],
                   help="more environment settings (NAME=VALUE ...) to profile under")
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=HERE)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.rounds, a.batch, a.size)))
        return
    results = [run(a.rounds, env, a.batch, a.size) for env in ["", *a.env]]
    text = markdown(results, a.rounds)
    write_results(a.out, "RESULTS_torch_profile", text, results)
    print(text)


if __name__ == "__main__":
    main()
