"""Where a JAX training step of CRAResNet20 spends its time, by XLA's own profile.

For attention = none / floor / cra, each in its own process with XLA dumping the optimized
program (HLO text and buffer assignment): `train_on_batch` at batch 64 on 32x32 inputs,
profiled with `jax.profiler` over `--steps` steps after warm-up. Each executed HLO op
(thunk) is put in one group by the layers named in its HLO metadata: `attention` (only the
attention layer's ops), `mixed` (the attention layer's ops fused with others'),
`transposes` (the `transpose_copy` fusions that lay out activations for the convolution
weight gradients; their HLO is the same in every model) and `rest`. For the three slowest
transposes it lists where their inputs of over 1 MB sit in XLA's buffer: the offsets modulo
64 KiB (all equal: every input maps to the same cache sets). Each `--flags` value is one more
set of runs with those XLA flags, to show how the placement moves the transposes' time.
Writes benchmarks/RESULTS_jax_profile.md and .json. Run with nothing else on the machine:

    python benchmarks/jax_profile.py
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ATTENTIONS = ("none", "floor", "cra")
GROUPS = ("attention", "mixed", "transposes", "rest")
SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = ")
_CALLS = re.compile(r"calls=%([^,\s}]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?(\S+) \(.*\) -> .*\{$")


def op_layers(hlo_text):
    """`{instruction: Counter(metadata op_name paths)}` for the entry's instructions.

    A fusion's paths are those of the instructions inside its fused computation.
    """
    bodies, current, entry = {}, None, []
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            current = bodies.setdefault(head.group(1), [])
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None:
            current.append(line)
    ops = {}
    for line in entry:
        m = _INSTRUCTION.match(line)
        if m:
            calls = _CALLS.search(line)
            text = "\n".join(bodies.get(calls.group(1), ())) if calls else line
            ops[m.group(1)] = collections.Counter(re.findall(r'op_name="([^"]*)"', text))
    return ops


def group(name, paths, attention_layers):
    """The group of one HLO instruction (see the module docstring)."""
    if name.startswith("transpose_copy"):
        return "transposes"
    hits = [bool(attention_layers & set(re.split(r"[()/]", p))) for p in paths]
    if hits and all(hits):
        return "attention"
    return "mixed" if any(hits) else "rest"


def thunk_times(trace_events, steps):
    """`{name: ms per step}` of the executed ops of a perfetto trace (`ph == "X"`)."""
    times = collections.Counter()
    for e in trace_events:
        if e.get("ph") == "X" and not e["name"].startswith("$"):
            times[e["name"]] += e.get("dur", 0) / 1000 / steps
    return times


def buffer_offsets(assignment_text, names, min_bytes=1 << 20):
    """`{name: offset}` in XLA's buffer assignment of the named values over `min_bytes`."""
    out = {}
    for m in re.finditer(r"value: <\d+ (\S+) @0> \(size=(\d+),offset=(\d+)\)", assignment_text):
        if m.group(1) in names and int(m.group(2)) > min_bytes:
            out.setdefault(m.group(1), int(m.group(3)))
    return out


def operands(hlo_text, name):
    m = re.search(r"%" + re.escape(name) + r" = \S+ \S+\((.*?)\), kind=", hlo_text)
    return [p.strip().lstrip("%") for p in re.sub(r"/\*.*?\*/", "", m.group(1)).split(",")]


def worker(attention, steps, dump, batch=64, size=32):
    """Runs in a JAX process whose XLA_FLAGS dump to `dump`; returns the profile as data."""
    import jax
    import keras
    import numpy as np

    from benchmarks.run import build

    model = build("CRAResNet20", attention, size)
    plain = {layer.name for layer in build("CRAResNet20", "none", size).layers}
    attention_layers = {layer.name for layer in model.layers
                        if not isinstance(layer, keras.layers.InputLayer)} - plain
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch,))
    for _ in range(3):
        model.train_on_batch(x, y)
    trace_dir = os.path.join(dump, "trace")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            model.train_on_batch(x, y)
    [trace] = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    times = thunk_times(json.load(gzip.open(trace))["traceEvents"], steps)
    [program] = glob.glob(os.path.join(dump, "*jit_train_step.cpu_after_optimizations.txt"))
    hlo = open(program).read()
    assignment = open(program.replace(".txt", "-buffer-assignment.txt")).read()
    ops = op_layers(hlo)
    groups = collections.Counter()
    for name, ms in times.items():
        if name in ops:
            groups[group(name, ops[name], attention_layers)] += ms
    slowest = []
    for name, ms in sorted(((n, t) for n, t in times.items() if n.startswith("transpose_copy")),
                           key=lambda item: -item[1])[:3]:
        offsets = buffer_offsets(assignment, set(operands(hlo, name)))
        slowest.append({"name": name, "ms": ms, "offsets_mod_64k": sorted(
            o % 65536 for o in offsets.values())})
    return {"attention": attention, "groups": {g: groups[g] for g in GROUPS},
            "total_ms": sum(groups.values()), "attention_layers": len(attention_layers),
            "slowest_transposes": slowest}


def run(attention, steps, flags="", batch=64, size=32):
    with tempfile.TemporaryDirectory() as dump:
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT, XLA_FLAGS=" ".join([
            f"--xla_dump_to={dump}", "--xla_dump_hlo_as_text", "--xla_dump_hlo_pass_re=NONE",
            flags]))
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                               attention, "--steps", str(steps), "--batch", str(batch),
                               "--size", str(size)], env=env, cwd=dump,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"profiling {attention} failed: {done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]), flags=flags)


def markdown(results, steps):
    from benchmarks.common import results_header

    lines = results_header("a CRAResNet20 JAX training step, op by op") + [
        f"`train_on_batch`, batch 64, 32x32, {steps} profiled steps after 3 warm-up steps, "
        "each model in its own process. Times are ms per step summed over XLA's executed ops "
        "(jax.profiler), grouped by the layers in each op's HLO metadata: `attention` only the "
        "attention layer's ops, `mixed` its ops fused with others', `transposes` the "
        "`transpose_copy` fusions feeding the convolution weight gradients (the same HLO in "
        "every model), `rest` everything else. `offsets mod 64 KiB`: where the inputs over "
        "1 MB of the three slowest transposes sit in XLA's buffer.", "",
        "| XLA flags | attention | total ms | attention | mixed | transposes | rest | "
        "slowest transposes: ms (offsets mod 64 KiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        slow = "; ".join(f"{t['ms']:.1f} ({', '.join(map(str, t['offsets_mod_64k']))})"
                         for t in r["slowest_transposes"])
        lines.append(
            f"| {r['flags'] or 'default'} | {r['attention']} | {r['total_ms']:.1f} | "
            + " | ".join(f"{r['groups'][g]:.1f}" for g in GROUPS) + f" | {slow} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from benchmarks.common import write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--flags", nargs="*", default=[SCHEDULER_FLAG],
                   help="more XLA flag sets to profile under, besides the default")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--worker", metavar="ATTENTION", help=argparse.SUPPRESS)
    p.add_argument("--out", default=HERE)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.steps, os.getcwd(), a.batch, a.size)))
        return
    results = [run(att, a.steps, flags) for flags in ["", *a.flags] for att in a.attentions]
    text = markdown(results, a.steps)
    write_results(a.out, "RESULTS_jax_profile", text, results)
    print(text)


if __name__ == "__main__":
    main()
