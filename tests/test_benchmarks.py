"""The benchmark helpers that shape the published numbers (not timings)."""

import os

import numpy as np
import pytest

from benchmarks.common import (gate_floor_layer, interleaved, one_pool_bound_layer,
                               read_pool_bound_layer, slice_pool_bound_layer)
from benchmarks.run import build, repeats


def test_floor_is_the_gate_multiply_alone():
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype("float32")
    y = np.asarray(gate_floor_layer()(x))
    np.testing.assert_allclose(y, x / (1 + np.exp(-x[:, :1, :1, :])), rtol=1e-6)


def test_floor_sits_where_cra_sits():
    floor, cra, plain = (build("CRAResNet20", a) for a in ("floor", "cra", "none"))
    assert floor.count_params() == plain.count_params()
    assert len(floor.layers) == len(cra.layers)
    gates = [l.name for l in floor.layers if l.name.endswith("_attention")]
    assert len(gates) == 9 and gates[0] == "conv2_block1_attention"


def test_one_pool_bound_is_cra_on_the_grid_and_one_pool_off_it():
    from keras_cra.layers import CRA
    from tests.references import adaptive_max_pool_nhwc

    rng = np.random.default_rng(0)
    cra, bound = CRA(), one_pool_bound_layer()
    on_grid = rng.normal(size=(2, 14, 14, 3)).astype("float32")
    cra(on_grid)
    bound.build(on_grid.shape)
    bound.set_weights(cra.get_weights())
    np.testing.assert_array_equal(np.asarray(bound(on_grid)), np.asarray(cra(on_grid)))
    off_grid = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    blocks = off_grid[:, :28, :28].reshape(2, 7, 4, 7, 4, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(np.asarray(bound.pool(off_grid)), blocks)
    # ... which is not CRA's pool there (PyTorch's windows overlap and reach row 31).
    assert not np.array_equal(blocks, adaptive_max_pool_nhwc(off_grid, 7))
    model, reference = build("CRAResNet20", "onepool"), build("CRAResNet20", "cra")
    assert model.count_params() == reference.count_params()


def test_slice_pool_bound_takes_every_dth_pixel():
    from keras_cra.layers import CRA

    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    bound = slice_pool_bound_layer()
    np.testing.assert_array_equal(np.asarray(bound.pool(x)), x[:, 0:28:4, 0:28:4])
    small = rng.normal(size=(2, 5, 6, 3)).astype("float32")  # smaller than 7: CRA's pool
    np.testing.assert_array_equal(np.asarray(bound.pool(small)), np.asarray(CRA().pool(small)))
    model, reference = build("CRAResNet20", "slicepool"), build("CRAResNet20", "cra")
    assert model.count_params() == reference.count_params()


def test_read_pool_bound_repeats_each_channels_maximum():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 9, 12, 3)).astype("float32")
    bound = read_pool_bound_layer()
    expected = np.broadcast_to(x.max(axis=(1, 2), keepdims=True), (2, 7, 7, 3))
    np.testing.assert_array_equal(np.asarray(bound.pool(x)), expected)
    model, reference = build("CRAResNet20", "readpool"), build("CRAResNet20", "cra")
    assert model.count_params() == reference.count_params()


def test_repeats_and_interleaving():
    assert repeats("CRAResNet50", 20) == 20 and repeats("CRAResNet50", 20, 32) == 8
    assert repeats("CRAResNet20", 20, 32) == 60
    calls = []
    r = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3,
                    warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert set(r) == {"a", "b"} and r["a"]["min_ms"] <= r["a"]["median_ms"] <= r["a"]["max_ms"]
    calls.clear()
    r = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3,
                    warmup=0, rotate=True)
    assert calls == ["a", "b", "b", "a", "a", "b"] and len(r["a"]["times_ms"]) == 3


def test_round_ratio_pairs_rounds():
    from benchmarks.common import round_ratio

    # Round by round b is twice a; the medians alone would give 3.0 / 3.0 = 1.
    r = {"a": {"times_ms": [1.0, 3.0, 10.0]}, "b": {"times_ms": [2.0, 6.0, 3.0]}}
    assert round_ratio(r, "b", "a") == 2.0


def test_ratio_difference_resamples_whole_rounds():
    from benchmarks.common import ratio_difference

    rng = np.random.default_rng(1)
    noise = rng.uniform(0.8, 1.4, size=40)
    # `c` and `b` share each round's slow-down and c is 0.1 dearer, so every resample of
    # whole rounds gives exactly 0.1; resampling the two separately would not.
    r = {"a": {"times_ms": [100.0] * 40}, "b": {"times_ms": list(100 * noise)},
         "c": {"times_ms": list(100 * noise + 10)}}
    d, low, high = ratio_difference(r, "c", "b", "a")
    assert d == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    # Independent noise: a real interval around the difference of the round ratios.
    r["c"] = {"times_ms": list(100 * rng.uniform(0.8, 1.4, size=40) + 10)}
    d, low, high = ratio_difference(r, "c", "b", "a")
    assert low < d < high and high - low > 0.05


def test_verdict_reads_the_whole_interval():
    from benchmarks.common import verdict

    assert verdict(0.01, 0.05, 0.05) == "met"
    assert verdict(0.051, 0.2, 0.05) == "missed"
    assert verdict(0.03, 0.07, 0.05) == "undecided"


def test_backends_table_gives_intervals_and_readings():
    from benchmarks.backends import ATTENTIONS, markdown

    rounds = 30
    rng = np.random.default_rng(2)
    times = {a: {"median_ms": 100.0, "times_ms": list(100 * rng.uniform(0.99, 1.01, rounds))}
             for a in ATTENTIONS}
    times["cra"]["times_ms"] = [t * 1.3 for t in times["none"]["times_ms"]]  # +0.3: missed
    text = markdown([{"backend": "torch", "cases": {"r50_b8": times}}], rounds)
    row = next(line for line in text.splitlines() if line.startswith("| torch | r50_b8"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[-2].endswith("missed") and cells[-1].endswith("missed"), row
    assert cells[-2].startswith("+0.2") or cells[-2].startswith("+0.3"), row


def test_processes_are_resampled_before_rounds():
    from benchmarks.backends import ATTENTIONS, markdown
    from benchmarks.common import merge_processes, ratio_difference

    rng = np.random.default_rng(3)

    def process(cra_cost):
        t = {a: {"times_ms": list(100 * rng.uniform(0.999, 1.001, 20)), "faults": 0.0}
             for a in ATTENTIONS + ("slicepool", "readpool")}
        t["cra"]["times_ms"] = [x * (1 + cra_cost) for x in t["none"]["times_ms"]]
        t["slicepool"]["times_ms"] = [x * (1 + cra_cost / 2) for x in t["none"]["times_ms"]]
        t["readpool"]["times_ms"] = [x * (1 + cra_cost / 4) for x in t["none"]["times_ms"]]
        return t

    # Within each process the difference is steady; between processes it is 0.02 or 0.12.
    runs = [process(0.02), process(0.12), process(0.02), process(0.12)]
    merged = merge_processes(runs)
    assert merged["cra"]["process"] == [p for p in range(4) for _ in range(20)]
    assert len(merged["none"]["times_ms"]) == 80
    d, low, high = ratio_difference(merged, "cra", "floor", "none")
    # Rounds alone would give a narrow interval; resampled processes reach both levels.
    assert low < 0.03 and high > 0.11, (low, high)
    one, low1, high1 = ratio_difference(runs[1], "cra", "floor", "none")
    assert high1 - low1 < 0.01 and one == pytest.approx(0.12, abs=0.005)
    text = markdown([{"backend": "jax", "processes": 4, "cases": {"r20_train_b64": merged}}],
                    20, processes=4)
    row = next(line for line in text.splitlines() if line.startswith("| jax | r20_train_b64"))
    header = next(line for line in text.splitlines() if line.startswith("| backend"))
    cells = dict(zip([c.strip() for c in header.split("|")[1:-1]],
                     [c.strip() for c in row.split("|")[1:-1]]))
    assert cells["cra - floor"].endswith("undecided"), row
    assert cells["readpool - floor"].startswith("+0.0"), row

    def process_cells(name):
        return [float(v) for v in cells[f"{name} - floor by process"].split(", ")]

    assert process_cells("cra") == pytest.approx([0.02, 0.12, 0.02, 0.12], abs=0.005), row
    assert process_cells("slicepool") == pytest.approx([0.01, 0.06, 0.01, 0.06], abs=0.005)
    assert process_cells("readpool") == pytest.approx([0.005, 0.03, 0.005, 0.03], abs=0.005)
    assert len(cells) == len(header.split("|")) - 2 == 17, header
    assert "4 processes" in text


@pytest.mark.large  # ~20 s: add_attention, round trip, fit and export on a keras.applications model
def test_attention_table_row():
    """One row of benchmarks/attention_table.py, small input (the full table: slow test)."""
    from benchmarks.attention_table import markdown, row

    r = row("MobileNetV3Small", size=64)
    # MobileNetV3Small has 6 residual adds; CRA adds C * 50 parameters at each.
    assert r["attention_layers"] == 6 and r["params_added"] == 17_200
    assert r["macs_added"] > 0 and r["round_trip"] and r["fits"] and r["exports"], r
    assert "| MobileNetV3Small | 6 | 17,200 |" in markdown([r], 64, "cra")


@pytest.mark.slow
def test_full_attention_table():
    from benchmarks.attention_table import MODELS, row

    for name in MODELS:
        r = row(name, size=96)
        assert r["attention_layers"] > 0 and r["round_trip"] and r["fits"] and r["exports"], r


@pytest.mark.large  # ~50 s: two JAX processes compile and profile a CRAResNet20 training step
def test_jax_profile_groups_xla_ops_by_layer():
    """benchmarks/jax_profile.py on XLA's own dump and trace: the attention groups hold time
    only when the model has attention layers, every profiled op is in one group, and the
    slowest transposes' megabyte-sized inputs are found in XLA's buffer assignment."""
    import importlib.util

    from benchmarks.jax_profile import GROUPS, markdown, run

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (optional)")
    none, cra = run("none", 1), run("cra", 1)
    assert none["attention_layers"] == 0 and cra["attention_layers"] == 9  # 3 stages x 3 blocks
    assert none["groups"]["attention"] == 0 and none["groups"]["mixed"] == 0, none
    assert cra["groups"]["attention"] > 0 and cra["groups"]["mixed"] > 0, cra
    for r in (none, cra):
        assert r["groups"]["transposes"] > 0 and r["groups"]["rest"] > 0, r
        assert r["total_ms"] == pytest.approx(sum(r["groups"][g] for g in GROUPS))
        # Which transposes are slowest varies with the machine and one step's timing; that
        # each reads a buffer the assignment places (all operands here are >= 1 MiB tensors
        # of 64 images) does not.
        for slow in r["slowest_transposes"]:
            assert slow["name"].startswith("transpose_copy"), slow
            assert slow["ms"] > 0 and 1 <= len(slow["offsets_mod_64k"]) <= 4, slow
    assert "| default | cra |" in markdown([none, cra], 1)


def test_write_results_makes_its_folder(tmp_path):
    from benchmarks.common import write_results

    write_results(str(tmp_path / "new" / "folder"), "RESULTS_x", "| a |\n", {"a": 1})
    assert (tmp_path / "new" / "folder" / "RESULTS_x.md").read_text() == "| a |\n"
    assert (tmp_path / "new" / "folder" / "RESULTS_x.json").exists()


def test_interleaved_counts_page_faults_per_call():
    import mmap

    def touch():
        # A fresh anonymous 64 MiB mapping, every page written: at least one fault per
        # 2 MiB even where transparent huge pages back it. (np.ones of that size faulted
        # less after the full attention table had run in the same process.)
        with mmap.mmap(-1, 64 << 20) as m:
            np.frombuffer(m, dtype=np.uint8)[::4096] = 1

    results = interleaved({"touch": touch, "idle": lambda: None}, 3, warmup=1)
    assert results["touch"]["faults"] >= 32, results["touch"]["faults"]
    assert results["idle"]["faults"] <= 2, results["idle"]["faults"]


def test_command_line_names_the_measured_environment(monkeypatch):
    from benchmarks.common import command_line

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "33554432")
    monkeypatch.setattr("sys.argv", ["benchmarks/backends.py", "--cases", "r50_b8"])
    assert command_line() == ("MALLOC_MMAP_THRESHOLD_=33554432 python "
                              + os.path.relpath("benchmarks/backends.py") + " --cases r50_b8")
    monkeypatch.setenv("LD_PRELOAD", "libtcmalloc_minimal.so.4")
    assert command_line().startswith(
        "MALLOC_MMAP_THRESHOLD_=33554432 LD_PRELOAD=libtcmalloc_minimal.so.4 python ")


@pytest.mark.large  # ~25 s: a torch process profiles four small ResNet-50s
def test_torch_profile_splits_aten_ops_by_attention_layer():
    """benchmarks/torch_profile.py on torch.profiler's own events: attention time only where
    the model has attention layers, CRA's pool among its attention ops, faults counted."""
    import importlib.util

    from benchmarks.torch_profile import markdown, run

    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (optional)")
    r = run(2, batch=1, size=64)
    models = r["models"]
    assert models["none"]["attention_layers"] == 0 and models["cra"]["attention_layers"] == 16
    assert models["none"]["attention_ms"] == 0, models["none"]
    for attention in ("floor", "se", "cra"):
        assert models[attention]["attention_ms"] > 0, models[attention]
    cra_ops = {op for op, ms in models["cra"]["ops"].items() if ms > 0}
    assert cra_ops & {"attention:aten::amax", "attention:aten::adaptive_max_pool2d",
                      "attention:aten::max_pool2d_with_indices"}, cra_ops
    assert not any(op.startswith("attention:") for op in models["none"]["ops"])
    for m in models.values():
        assert m["other_ms"] > 0 and m["faults"] >= 0 and m["wall_ms"] > m["other_ms"], m
    assert "| default | cra |" in markdown([r], 2)
