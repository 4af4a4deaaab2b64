import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_cra.training import ablate as ablate_lib
from keras_cra.training import train as train_lib
from keras_cra.cli import UsageError
from tests.helpers import one_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(tfds_dir, **kw):
    base = dict(model="CRAResNet20", dataset="fashion_mnist", train_split="train[:256]",
                eval_split="test[:128]", epochs=2, batch_size=64, data_dir=tfds_dir,
                schedule="cosine", verbose=0)
    base.update(kw)
    return train_lib.TrainConfig(**base)


def test_summary_against_a_hand_computed_example():
    rows = [{"attention": a, "seed": s, "top1": t, "top5": 0.99, "params": p, "macs": m,
             "images_per_second": 100.0}
            for a, p, m, tops in (("none", 10, 100, (0.80, 0.82, 0.84)),
                                  ("cra", 12, 101, (0.81, 0.84, 0.87)),
                                  ("se", 11, 101, (0.79,)))
            for s, t in zip((0, 1, 2), tops)]
    summary = {e["attention"]: e for e in ablate_lib.summarize(rows)}
    # none: mean 0.82, sample std 0.02; t(0.975, 2) = 4.302653, so the interval of the
    # mean is 4.302653 * 0.02 / sqrt(3) = 0.049683.
    assert summary["none"]["top1_mean"] == pytest.approx(0.82)
    assert summary["none"]["top1_std"] == pytest.approx(0.02)
    assert summary["none"]["top1_ci"] == pytest.approx(0.049683, abs=1e-6)
    assert summary["none"]["diff_mean"] is None and summary["none"]["pairs"] == 0
    # cra - none by seed: 0.01, 0.02, 0.03: mean 0.02, std 0.01, half width
    # 4.302653 * 0.01 / sqrt(3) = 0.024841.
    assert summary["cra"]["diff_mean"] == pytest.approx(0.02)
    assert summary["cra"]["diff_ci"] == pytest.approx(0.024841, abs=1e-6)
    assert summary["cra"]["pairs"] == 3 and summary["cra"]["runs"] == 3
    # se: one run, one pair: a difference but no interval, no std.
    assert summary["se"]["diff_mean"] == pytest.approx(-0.01)
    assert summary["se"]["diff_ci"] is None and summary["se"]["top1_std"] is None
    text = ablate_lib.summary_markdown(ablate_lib.summarize(rows), {
        "model": "M", "dataset": "D", "train_split": "train", "eval_split": "test", "epochs": 1,
        "batch_size": 8, "lr": 0.1, "schedule": "step", "weight_decay": 0.0})
    assert "| cra | 3 | 84.00 | 3.00 | 99.00 | +2.00 | [-0.48, +4.48] |" in text


@pytest.mark.parametrize("text, flag, cast, message", [
    ("none,cra,cra", "--attention", str, "cra more than once"),
    ("0,1,0", "--seeds", int, "0 more than once"),
    ("0,,1", "--seeds", int, "without empty items"),
    ("0,x", "--seeds", int, "not valid"),
])
def test_bad_lists(text, flag, cast, message):
    with pytest.raises(UsageError, match=message):
        ablate_lib.parse_list(text, flag, cast)


def test_unknown_attention_and_bad_seeds(tmp_path, tfds_dir):
    with pytest.raises(UsageError, match="unknown attention 'cbam'"):
        ablate_lib.ablate(tiny_config(tfds_dir), ["none", "cbam"], [0], str(tmp_path / "g"))
    with pytest.raises(UsageError, match="--seeds must be integers >= 0"):
        ablate_lib.ablate(tiny_config(tfds_dir), ["none"], [-1], str(tmp_path / "g"))
    assert not (tmp_path / "g").exists()


class Interrupted(Exception):
    pass


@pytest.mark.large
@pytest.mark.xdist_group("ablation_grid")
def test_tiny_grid_runs_resumes_skips_and_refuses_another_recipe(tfds_dir, tmp_path, monkeypatch):
    out = tmp_path / "grid"
    real_timer = ablate_lib._train_time_callback

    def interrupting_timer(path):
        timer = real_timer(path)
        if os.path.basename(path).startswith("cra_seed1"):
            end = timer.on_epoch_end

            def on_epoch_end(epoch, logs=None):
                end(epoch, logs)
                raise Interrupted  # after epoch 1's checkpoint and state.json

            timer.on_epoch_end = on_epoch_end
        return timer

    monkeypatch.setattr(ablate_lib, "_train_time_callback", interrupting_timer)
    with pytest.raises(Interrupted):
        ablate_lib.ablate(tiny_config(tfds_dir), ["none", "cra"], [0, 1], str(out))
    assert (out / "runs" / "cra_seed1" / "state.json").exists()
    assert not (out / "results.csv").exists()
    monkeypatch.setattr(ablate_lib, "_train_time_callback", real_timer)

    statuses = []
    result = ablate_lib.ablate(tiny_config(tfds_dir), ["none", "cra"], [0, 1], str(out),
                               on_run=lambda i, n, a, s, status: statuses.append(status))
    assert statuses == ["done", "done", "done", "resume"]
    with open(out / "runs" / "cra_seed1" / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 2  # one epoch before, one after the resume
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attention"], r["seed"]) for r in rows] == [
        ("none", "0"), ("none", "1"), ("cra", "0"), ("cra", "1")]
    assert set(rows[0]) == set(ablate_lib.COLUMNS)
    by = {(r["attention"], int(r["seed"])): r for r in rows}
    for (attention, seed), r in by.items():
        metrics = json.loads((out / "runs" / f"{attention}_seed{seed}" / "metrics.json").read_text())
        assert float(r["top1"]) == pytest.approx(metrics["top1"])
        assert float(r["images_per_second"]) > 0 and float(r["train_seconds"]) > 0
    # CRAResNet20's 9 CRA layers: 16, 32 and 64 channels x 3 blocks x (7 * 7 + 1) parameters.
    assert int(by["cra", 0]["params"]) - int(by["none", 0]["params"]) == 3 * 50 * (16 + 32 + 64)
    assert int(by["cra", 0]["macs"]) > int(by["none", 0]["macs"])
    cra = next(e for e in result["summary"] if e["attention"] == "cra")
    diffs = [float(by["cra", s]["top1"]) - float(by["none", s]["top1"]) for s in (0, 1)]
    assert cra["diff_mean"] == pytest.approx(np.mean(diffs)) and cra["pairs"] == 2
    summary = (out / "summary.md").read_text()
    assert "| cra | 2 |" in summary and "| none | 2 |" in summary
    from matplotlib.image import imread

    for name in (ablate_lib.CURVES_PNG, ablate_lib.TOP1_PNG):
        image = imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0

    # A run killed after its last epoch, before its metrics.json (and a kill -9 leftover of
    # a checkpoint write): evaluated on the next invocation, not refused, nothing retrained.
    killed = out / "runs" / "none_seed1"
    (killed / "metrics.json").unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (killed / f".last.partial-{dead}.keras").write_text("half")
    killed_mtime = os.path.getmtime(killed / "last.keras")
    statuses.clear()
    ablate_lib.ablate(tiny_config(tfds_dir), ["none", "cra"], [0, 1], str(out),
                      on_run=lambda i, n, a, s, status: statuses.append(status))
    assert statuses == ["done", "resume", "done", "done"]
    assert json.loads((killed / "metrics.json").read_text())["top1"] == pytest.approx(
        float(by["none", 1]["top1"]))
    assert os.path.getmtime(killed / "last.keras") == killed_mtime
    assert not [n for n in os.listdir(killed) if ".partial-" in n]

    # Everything done: nothing trains again.
    mtime = os.path.getmtime(out / "runs" / "none_seed0" / "last.keras")
    statuses.clear()
    ablate_lib.ablate(tiny_config(tfds_dir), ["none", "cra"], [0, 1], str(out),
                      on_run=lambda i, n, a, s, status: statuses.append(status))
    assert statuses == ["done"] * 4
    assert os.path.getmtime(out / "runs" / "none_seed0" / "last.keras") == mtime

    # Another recipe on this grid: refused, naming the setting; nothing overwritten.
    grid = (out / "grid.json").read_text()
    csv_text = (out / "results.csv").read_text()
    with pytest.raises(UsageError, match=r"another ablation grid: --epochs 3 \(the grid has 2\)"):
        ablate_lib.ablate(tiny_config(tfds_dir, epochs=3), ["none"], [0], str(out))
    assert (out / "grid.json").read_text() == grid and (out / "results.csv").read_text() == csv_text


def test_out_holding_something_else_is_refused(tfds_dir, tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds no ablation grid"):
        ablate_lib.ablate(tiny_config(tfds_dir), ["none"], [0], str(tmp_path / "g"))
    assert os.listdir(tmp_path / "g") == ["notes.txt"]


@pytest.mark.large
def test_cli_errors_name_the_flag(tmp_path, capsys):
    # The script itself once (it wraps ablate_lib.main), then main in-process.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "training", "ablate.py"),
                           "--out", str(tmp_path / "g"), "--attention", "none,cbam"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "--attention" in proc.stderr and "Traceback" not in proc.stderr
    assert "--seeds lists 1 more than once" in one_error(
        ablate_lib.main, ["--out", str(tmp_path / "g"), "--seeds", "1,1"], capsys)
    assert not (tmp_path / "g").exists()


def test_t_interval_small_samples():
    # n = 2: t(0.975, 1) = 12.706205; values 1 and 3: mean 2, std sqrt(2), sem 1.
    mean, half = ablate_lib.t_interval([1.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(12.706205, abs=1e-6)
    assert ablate_lib.t_interval([5.0]) == (5.0, None)
    assert math.isfinite(ablate_lib.t_interval([0.5, 0.5, 0.5])[1])
