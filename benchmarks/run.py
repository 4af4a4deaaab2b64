#!/usr/bin/env python3
"""CRA's cost, as ratios against the same backbone without attention, in one run.

Measures parameters and MACs (analytic, per layer type), Keras (TensorFlow)
inference latency at batch 1 and 32, training-step time at batch 32, and
LiteRT float32 / int8 single-image latency at 1 and 2 threads, for
attention = none / cra / se / eca, and `floor` (the multiply by an
input-dependent channel gate that every attention must do, alone). Timed variants of one backbone are run
interleaved (A/B/A/B...) after warm-up; medians and min-max are reported.
Writes benchmarks/RESULTS.md and benchmarks/RESULTS.json.

    python benchmarks/run.py --quick     # < 5 minutes on 2 cores
    python benchmarks/run.py             # the full table in the README
    python benchmarks/run.py --bound     # off-grid rows next to `onepool` (one max pool per map)
    python benchmarks/run.py --backends  # TensorFlow, JAX and PyTorch, each in its own process
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    command_line,
    gate_floor_layer,
    git_revision,
    interleaved,
    machine,
    one_pool_bound_layer,
    ratio,
    read_pool_bound_layer,
    slice_pool_bound_layer,
    results_header,
    write_json,
)
from keras_cra.layers.registry import attention_choices  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ATTENTIONS = ["none"] + [a for a in attention_choices() if a != "none"]
TIMED = ATTENTIONS + ["floor"]
PAPER = {  # the paper's reported params (M) and GFLOPs
    ("CRAResNet50", "none"): (25.56, 4.11), ("CRAResNet50", "cra"): (26.31, 4.11),
    ("CRAResNet101", "none"): (44.55, 7.83), ("CRAResNet101", "cra"): (46.17, 7.83),
    ("CRAResNeXt101", "none"): (44.18, 7.99), ("CRAResNeXt101", "cra"): (45.80, 7.99),
}


def build(model_name, attention, size=None):
    from keras_cra.applications import get_model, zoo

    if attention == "floor":
        attention = gate_floor_layer()
    elif attention == "onepool":
        attention = one_pool_bound_layer()
    elif attention == "slicepool":
        attention = slice_pool_bound_layer()
    elif attention == "readpool":
        attention = read_pool_bound_layer()
    style = zoo.get(model_name).style
    size = size or (224 if style == "imagenet" else 32)
    return get_model(model_name, attention=None if attention == "none" else attention,
                     input_shape=(size, size, 3), classes=1000 if style == "imagenet" else 10,
                     classifier_activation=None)


def static_rows(models):
    from keras_cra.profiling import count_macs, count_parameters

    rows = []
    for model_name in models:
        base = None
        for attention in ATTENTIONS:
            m = build(model_name, attention)
            params, macs = count_parameters(m), count_macs(m)
            if attention == "none":
                base = (params, macs)
            paper = PAPER.get((model_name, attention))
            rows.append({
                "model": model_name, "attention": attention, "params_m": params / 1e6,
                "gmacs": macs / 1e9, "params_ratio": params / base[0], "macs_ratio": macs / base[1],
                "paper_params_m": paper[0] if paper else None,
                "paper_gflops": paper[1] if paper else None,
            })
    return rows


def keras_latency(model_name, attentions, batch, repeats):
    import tensorflow as tf

    fns = {}
    for attention in attentions:
        model = build(model_name, attention)
        x = tf.constant(np.random.default_rng(0).normal(
            size=(batch,) + tuple(model.input_shape[1:])).astype("float32"))
        fn = tf.function(lambda t, m=model: m(t, training=False))
        fns[attention] = lambda f=fn, t=x: f(t).numpy()
    return interleaved(fns, repeats)


def train_step_time(model_name, attentions, batch, repeats):
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    fns = {}
    for attention in attentions:
        model = build(model_name, attention)
        x = tf.constant(rng.normal(size=(batch,) + tuple(model.input_shape[1:])).astype("float32"))
        y = tf.constant(rng.integers(0, 10, size=(batch,)))
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        fns[attention] = lambda m=model, xb=x, yb=y: m.train_on_batch(xb, yb)
    return interleaved(fns, repeats)


def litert_latency(model_name, attentions, repeats, threads, size=None, partitions=None):
    """LiteRT latency per (variant, threads); `partitions` (a dict) gets the
    XNNPACK partition count of every (attention, variant) model."""
    from keras_cra.export import tflite

    rng = np.random.default_rng(0)
    models = {}
    for attention in attentions:
        model = build(model_name, attention, size)
        size = model.input_shape[1]
        calib = [rng.normal(size=(2, size, size, 3)).astype("float32") for _ in range(2)]
        for variant in ("float32", "int8"):
            flat = tflite.convert(model, variant, representative_data=calib)
            models[(attention, variant)] = flat
            if partitions is not None:
                try:
                    partitions[(attention, variant)] = tflite.delegate_partitions(flat)
                except RuntimeError:  # XNNPACK refusing the model; reported below as n/a
                    partitions[(attention, variant)] = "n/a"
    x = rng.normal(size=(1, size, size, 3)).astype("float32")
    results = {}
    for variant in ("float32", "int8"):
        for n in threads:
            fns, failed = {}, {}
            for attention in attentions:
                try:
                    interp = tflite.interpreter(models[(attention, variant)], num_threads=n)
                    tflite.run(None, x, interp=interp)
                except RuntimeError as e:  # e.g. XNNPACK refusing a degenerate quantization
                    failed[attention] = {"error": str(e).splitlines()[0][:160]}
                    continue
                fns[attention] = lambda i=interp: tflite.run(None, x, interp=i)
            # Sub-millisecond models: time 20 calls per repetition.
            inner = 1 if size >= 224 else 20
            results[(variant, n)] = {**interleaved(fns, repeats, warmup=3, inner=inner), **failed}
    return results


# Input sizes whose maps are not all covered by one max pool (issue 12): the
# exporter gives CRA there max pools on slices. (model, input size, CRA maps.)
SIZE_SWEEP = [
    ("CRAResNet20", 32, "32 16 8"),
    ("CRAMobileNetV2", 160, "80 40 20 10 5"),
    ("CRAMobileNetV2", 192, "96 48 24 12 6"),
    ("CRAMobileNetV2", 224, "112 56 28 14 7"),
    ("CRAResNet50", 192, "48 24 12 6"),
    ("CRAResNet50", 256, "64 32 16 8"),
]


def size_sweep_lines(attentions, reps, payload, quick=False):
    """LiteRT rows of SIZE_SWEEP, with the XNNPACK partition count of each model."""
    sweep = SIZE_SWEEP[1:2] if quick else SIZE_SWEEP
    lines = ["", "## LiteRT latency at other input sizes (ms)", "",
             "Partitions: how many pieces XNNPACK's delegate makes of the `.tflite` "
             "(1 = the whole graph is delegated).", "",
             "| model | input | CRA maps | variant | threads | " + " | ".join(
                 f"{att} ms | ratio" for att in attentions) + " | partitions (" +
             "/".join(attentions) + ") |",
             "|---|---|---|---|---|" + "---|---|" * len(attentions) + "---|"]
    for model_name, size, maps in sweep:
        parts = {}
        res = litert_latency(model_name, attentions, reps, threads=(1, 2), size=size,
                             partitions=parts)
        for (variant, n), r in res.items():
            payload["timed"][f"litert_sizes/{model_name}/{size}/{variant}/{n}"] = {
                **r, "partitions": {att: parts[(att, variant)] for att in attentions}}
            lines.append(
                f"| {model_name} | {size} | {maps} | {variant} | {n} | " + " | ".join(
                    fmt_timing(r[att], r["none"]) for att in attentions) + " | " +
                "/".join(str(parts[(att, variant)]) for att in attentions) + " |")
            print(lines[-1], flush=True)
    return lines


TARGETS = [  # (timed key, what, max CRA / plain ratio) for CRA-ResNet-50, from issue 7
    ("keras_b1/CRAResNet50", "Keras inference, batch 1", 1.03),
    ("keras_b32/CRAResNet50", "Keras inference, batch 32", 1.03),
    ("train_b32/CRAResNet50", "training step, batch 32", 1.08),
    ("litert/CRAResNet50/float32/1", "LiteRT float32, 1 thread", 1.03),
    ("litert/CRAResNet50/float32/2", "LiteRT float32, 2 threads", 1.03),
    ("litert/CRAResNet50/int8/1", "LiteRT int8, 1 thread", 1.03),
    ("litert/CRAResNet50/int8/2", "LiteRT int8, 2 threads", 1.03),
]


def target_lines(timed, attentions):
    """CRA-ResNet-50 ratios against the targets, and CRA vs SE in every timed row."""
    lines = ["", "## Targets (CRA-ResNet-50 / ResNet-50)", "",
             "| measurement | CRA ratio | target | met | floor ratio |", "|---|---|---|---|---|"]
    for key, what, target in TARGETS:
        if key in timed and "error" not in timed[key]["cra"]:
            r = ratio(timed[key]["cra"], timed[key]["none"])
            floor = timed[key].get("floor", {"error": 1})
            floor = "-" if "error" in floor else f"{ratio(floor, timed[key]['none']):.3f}"
            lines.append(f"| {what} | {r:.3f} | <= {target} | {'yes' if r <= target else 'no'} "
                         f"| {floor} |")
    if "se" in attentions:
        lines += ["", "## CRA vs SE at the same placement (time ratio CRA / SE)", "",
                  "| row | CRA / SE | CRA cheaper |", "|---|---|---|"]
        for key, r in timed.items():
            if "error" in r.get("cra", {}) or "error" in r.get("se", {"error": 1}):
                continue
            q = ratio(r["cra"], r["se"])
            lines.append(f"| {key} | {q:.3f} | {'yes' if q < 1 else 'no'} |")
    return lines


def report_head(title, about=""):
    """`(payload, lines)` that start a RESULTS_*.md report: title, machine, command."""
    payload = {"machine": machine(), "command": command_line(), "timed": {}}
    lines = results_header(title) + [
        "Ratios against the same model with `attention=None`, interleaved in one run; "
        "`floor` as in RESULTS.md." + about]
    return payload, lines


def write_report(out, name, lines, payload):
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_json(os.path.join(out, f"{name}.json"), payload)


def sizes_only(out):
    payload, lines = report_head("LiteRT at input sizes off the 7d grid")
    lines += size_sweep_lines(["none", "cra", "se", "floor"], 20, payload)
    write_report(out, "RESULTS_sizes", lines, payload)
    print("\n".join(lines))


BOUND_ATTENTIONS = ["none", "floor", "eca", "se", "cra", "onepool"]


def bound_only(out, reps=20):
    """Off-grid rows with `onepool` (CRA's cost if one max pool covered every map):
    how far any exact pooling layout could bring CRA. Writes RESULTS_bound.md / .json."""
    payload, lines = report_head(
        "what pooling could still win off the 7d grid",
        " `onepool` is not CRA: CRA's weights and gate math with the adaptive pool replaced "
        "by one VALID max pool of window `size // 7` cropped to 7x7 "
        "(`benchmarks.common.one_pool_bound_layer`), the path CRA takes when a map is 7d x 7d. "
        "It is as cheap as a 7x7 max pool gets (one op reading the map once), so a row where "
        "`onepool` misses `floor + 0.05` will not be met by any exact layout of CRA's pooling.")
    atts = BOUND_ATTENTIONS
    head = "| model | row | " + " | ".join(f"{a} ms | ratio" for a in atts) + " |"
    rule = "|---|---|" + "---|---|" * len(atts)
    lines += ["", "## Keras (TensorFlow), batch 32", "", head, rule]
    for model_name in ("CRAResNet20", "CRAResNet56"):
        for key, what, fn in (("keras_b32", "inference", keras_latency),
                              ("train_b32", "training step", train_step_time)):
            r = fn(model_name, atts, 32, repeats(model_name, reps, 32))
            payload["timed"][f"{key}/{model_name}"] = r
            lines.append(f"| {model_name} | {what} | "
                         + " | ".join(fmt_timing(r[a], r["none"]) for a in atts) + " |")
            print(lines[-1], flush=True)
    lines += ["", "## LiteRT, one image", "",
              "| model | input | variant | threads | " + " | ".join(
                  f"{a} ms | ratio" for a in atts) + " |", "|---|---|---|---|" + "---|---|" * len(atts)]
    for model_name, size in (("CRAResNet20", 32), ("CRAMobileNetV2", 160), ("CRAResNet50", 192)):
        res = litert_latency(model_name, atts, max(reps // 2, 5), threads=(1, 2), size=size)
        for (variant, n), r in res.items():
            payload["timed"][f"litert/{model_name}/{size}/{variant}/{n}"] = r
            lines.append(f"| {model_name} | {size} | {variant} | {n} | " + " | ".join(
                fmt_timing(r[a], r["none"]) for a in atts) + " |")
            print(lines[-1], flush=True)
    write_report(out, "RESULTS_bound", lines, payload)
    return lines


DETECTOR_SECTION = ("<!-- detector section: python benchmarks/run.py --detector -->",
                    "<!-- end of detector section -->")


def detector_lines(backbone="CRAResNet18", image_size=128, reps=20):
    """CRA's cost inside a keras-hub RetinaNet: parameters, backbone MACs, and latency
    ratios (Keras forward at batch 1 and 8, LiteRT float32 decoded outputs, 1 and 2
    threads) against the same detector with `attention=None`."""
    import tensorflow as tf

    from keras_cra.detection.export import _functions, _convert_frozen
    from keras_cra.layers.cra import builtin_pooling
    from keras_cra.detection.model import build_detector
    from keras_cra.export import tflite
    from keras_cra.profiling import count_macs, count_parameters

    attentions = ["none", "cra", "se", "floor"]
    rng = np.random.default_rng(0)
    x1 = rng.integers(0, 256, size=(1, image_size, image_size, 3)).astype("uint8")
    x8 = rng.integers(0, 256, size=(8, image_size, image_size, 3)).astype("uint8")
    static, keras_fns, flats = {}, {1: {}, 8: {}}, {}
    for att in attentions:
        attention = gate_floor_layer() if att == "floor" else (None if att == "none" else att)
        det = build_detector(backbone, 10, image_size, attention=attention, head_convs=4)
        encoder = det.backbone.image_encoder
        static[att] = (count_parameters(det), count_macs(encoder) if att != "floor" else None)
        decoded, _ = _functions(det, image_size)
        for batch, x in ((1, x1), (8, x8)):
            keras_fns[batch][att] = lambda f=decoded, t=tf.constant(x): f(t)
        with builtin_pooling():  # as the exporter traces it
            flats[att] = _convert_frozen(_functions(det, image_size)[0])
    lines = [DETECTOR_SECTION[0], "",
             f"## CRA inside a detector: keras-hub RetinaNet on {backbone}, {image_size}x"
             f"{image_size}, 4-conv heads, 10 classes", "",
             "Same detector with `attention=None` as the base; decoded boxes and scores "
             "(no NMS), uint8 input. MACs: the backbone's (the FPN and heads are the same "
             "in every row).", "",
             "| attention | params (M) | params ratio | backbone GMACs | backbone MACs ratio |",
             "|---|---|---|---|---|"]
    base_p, base_m = static["none"]
    for att in attentions:
        p_, m_ = static[att]
        lines.append(f"| {att} | {p_ / 1e6:.3f} | {p_ / base_p:.4f} | "
                     f"{'-' if m_ is None else f'{m_ / 1e9:.3f}'} | "
                     f"{'-' if m_ is None else f'{m_ / base_m:.4f}'} |")
    lines += ["", "| measurement | " + " | ".join(f"{a} ms | ratio" for a in attentions) + " |",
              "|---|" + "---|---|" * len(attentions)]
    for batch in (1, 8):
        r = interleaved(keras_fns[batch], reps)
        lines.append(f"| Keras (TF), batch {batch} | " + " | ".join(
            fmt_timing(r[a], r["none"]) for a in attentions) + " |")
        print(lines[-1], flush=True)
    for n in (1, 2):
        fns = {}
        for att in attentions:
            interp = tflite.interpreter(flats[att], num_threads=n)
            inp = interp.get_input_details()[0]
            interp.allocate_tensors()

            def call(i=interp, idx=inp["index"]):
                i.set_tensor(idx, x1)
                i.invoke()

            fns[att] = call
        r = interleaved(fns, reps, warmup=3)
        lines.append(f"| LiteRT float32, {n} thread(s) | " + " | ".join(
            fmt_timing(r[a], r["none"]) for a in attentions) + " |")
        print(lines[-1], flush=True)
    return lines + ["", DETECTOR_SECTION[1]]


def detector_only(out):
    info = machine()
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, nothing else running; "
             f"TensorFlow {info['tensorflow']}, Keras {info['keras']}; commit {git_revision()}; "
             f"command `{command_line()}`.", ""]
    body = detector_lines()
    section = "\n".join([body[0], ""] + lines + body[1:])
    path = os.path.join(out, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else ""
    if DETECTOR_SECTION[0] in text:
        head, rest = text.split(DETECTOR_SECTION[0], 1)
        tail = rest.split(DETECTOR_SECTION[1], 1)[1] if DETECTOR_SECTION[1] in rest else ""
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(section)


def fmt_timing(r, base):
    if "error" in r:
        return "n/a | n/a"
    return f"{r['median_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) | {ratio(r, base):.3f}"


def repeats(model_name, base, batch=1):
    """Repetitions for one timed row: fewer for the slow ImageNet models at batch 32."""
    from keras_cra.applications import zoo

    if zoo.get(model_name).style == "imagenet":
        return base if batch == 1 else max(3, base * 2 // 5)
    return base * 3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a subset that runs in < 5 minutes")
    p.add_argument("--sizes", action="store_true",
                   help="only the LiteRT size sweep (writes RESULTS_sizes.md / .json)")
    p.add_argument("--detector", action="store_true",
                   help="only CRA's cost inside a RetinaNet (a section of RESULTS.md)")
    p.add_argument("--bound", action="store_true",
                   help="only the off-grid rows with `onepool`, the cost of one max pool per "
                        "map (writes RESULTS_bound.md / .json)")
    p.add_argument("--backends", action="store_true",
                   help="only CRA's cost on each Keras backend, each in its own process "
                        "(benchmarks/backends.py; writes RESULTS_backends.md / .json)")
    p.add_argument("--out", default=HERE)
    a = p.parse_args(argv)
    if a.backends:
        from benchmarks import backends

        return backends.main(["--out", a.out])
    if a.bound:
        return bound_only(a.out)
    if a.detector:
        return detector_only(a.out)
    if a.sizes:
        return sizes_only(a.out)
    if a.quick:
        static_models = ["CRAResNet18", "CRAResNet50", "CRAResNet20", "CRAResNet56"]
        timed = {"keras_b1": ["CRAResNet50", "CRAResNet20"], "keras_b32": ["CRAResNet20"],
                 "train_b32": ["CRAResNet20"], "litert": ["CRAResNet20"]}
        attentions, reps = ["none", "cra", "se", "floor"], 10
    else:
        static_models = ["CRAResNet18", "CRAResNet50", "CRAResNet101", "CRAResNeXt101",
                         "CRAResNet20", "CRAResNet56"]
        timed = {"keras_b1": ["CRAResNet50", "CRAResNet18", "CRAResNet20", "CRAResNet56"],
                 "keras_b32": ["CRAResNet50", "CRAResNet20", "CRAResNet56"],
                 "train_b32": ["CRAResNet50", "CRAResNet20"],
                 "litert": ["CRAResNet50", "CRAResNet20"]}
        attentions, reps = TIMED, 20
    info = machine()
    lines = [
        "# keras_cra benchmark results", "",
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']} ({info['backend']} backend); "
        f"commit {git_revision()}.", "",
        f"Command: `{command_line()}`", "",
        "Ratios are against the same backbone with `attention=None`, measured in the same run "
        "with interleaved repetitions (A/B/A/B after warm-up); times are medians with the "
        "min-max spread. `floor` is not an attention: it is `x * sigmoid(x[:, :1, :1, :])` "
        "at CRA's placement, the per-channel multiply by an input-dependent gate that every "
        "channel attention must do, with nothing else (no pooling, no parameters). No "
        "attention at this placement can cost less.", "",
        "## Parameters and MACs", "",
        "| model | attention | params (M) | GMACs | params ratio | MACs ratio | paper params (M) | paper GFLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    payload = {"machine": info, "command": command_line(), "static": static_rows(static_models),
               "timed": {}}
    for r in payload["static"]:
        lines.append(
            f"| {r['model']} | {r['attention']} | {r['params_m']:.2f} | {r['gmacs']:.3f} | "
            f"{r['params_ratio']:.4f} | {r['macs_ratio']:.4f} | {r['paper_params_m'] or '-'} | "
            f"{r['paper_gflops'] or '-'} |")
    sections = [("keras_b1", "Keras inference, batch 1 (ms)",
                 lambda m: keras_latency(m, attentions, 1, repeats(m, reps))),
                ("keras_b32", "Keras inference, batch 32 (ms)",
                 lambda m: keras_latency(m, attentions, 32, repeats(m, reps, 32))),
                ("train_b32", "Training step, batch 32 (ms)",
                 lambda m: train_step_time(m, attentions, 32, repeats(m, reps, 32)))]
    for key, title, fn in sections:
        lines += ["", f"## {title}", "", "| model | " + " | ".join(
            f"{att} ms | ratio" for att in attentions) + " |",
                  "|---|" + "---|---|" * len(attentions)]
        for model_name in timed[key]:
            r = fn(model_name)
            payload["timed"][f"{key}/{model_name}"] = r
            lines.append(f"| {model_name} | " + " | ".join(fmt_timing(r[att], r["none"])
                                                           for att in attentions) + " |")
            print(lines[-1], flush=True)
    lines += ["", "## LiteRT single-image latency (ms)", "",
              "| model | variant | threads | " + " | ".join(f"{att} ms | ratio" for att in attentions) + " |",
              "|---|---|---|" + "---|---|" * len(attentions)]
    notes = []
    for model_name in timed["litert"]:
        res = litert_latency(model_name, attentions, repeats(model_name, reps), threads=(1, 2))
        for (variant, n), r in res.items():
            payload["timed"][f"litert/{model_name}/{variant}/{n}"] = r
            lines.append(f"| {model_name} | {variant} | {n} | " + " | ".join(
                fmt_timing(r[att], r["none"]) for att in attentions) + " |")
            print(lines[-1], flush=True)
            notes += [f"- n/a: {model_name} {variant} {n} thread(s), attention={att}: "
                      f"{r[att]['error']}" for att in attentions if "error" in r[att]]
    if notes:
        lines += [""] + notes
    lines += size_sweep_lines([a for a in attentions if a in ("none", "cra", "se", "floor")],
                              repeats("CRAResNet50", reps), payload, quick=a.quick)
    lines += target_lines(payload["timed"], attentions)
    name = "RESULTS_quick" if a.quick else "RESULTS"
    with open(os.path.join(a.out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_json(os.path.join(a.out, f"{name}.json"), payload)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
