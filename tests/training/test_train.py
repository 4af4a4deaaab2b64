import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_cra.training import evaluate as evaluate_lib
from keras_cra.training import finetune as finetune_lib
from keras_cra.training import train as train_lib
from tests.helpers import one_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_config(tfds_dir, out, **kw):
    base = dict(model="CRAResNet20", dataset="fashion_mnist", train_split="train[:512]",
                eval_split="test[:256]", epochs=2, batch_size=64, data_dir=tfds_dir,
                out=str(out), verbose=0, seed=1)
    base.update(kw)
    return train_lib.TrainConfig(**base)


@pytest.mark.large
def test_short_real_run(tfds_dir, tmp_path):
    metrics = train_lib.train(small_config(tfds_dir, tmp_path / "run", epochs=3))
    out = tmp_path / "run"
    for name in ("config.json", "last.keras", "best.keras", "history.csv", "metrics.json",
                 "state.json"):
        assert (out / name).exists(), name
    assert os.listdir(out / "logs")
    with open(out / "history.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    saved = json.loads((out / "metrics.json").read_text())
    # 3 epochs on 512 images: top-5 well above chance (50%; 0.65 is ~5 sigma on 256 images).
    # Not top-1: after 24 steps at lr 0.1 it moved between 0.12 and 0.34 with the seed and
    # the thread count (BatchNorm's running statistics), while top-5 stayed in 0.74-0.93.
    assert saved == metrics and saved["top1"] <= saved["top5"] and saved["top5"] > 0.65
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.1 and config["momentum"] == 0.9 and config["weight_decay"] == 1e-4
    assert config["milestones"] == [82, 123]  # the CIFAR recipe defaults
    model = keras.saving.load_model(out / "last.keras")
    assert model.get_layer("conv2_block1_cra") is not None
    x = np.zeros((1, 28, 28, 3), "float32")
    assert model.predict(x, verbose=0).shape == (1, 10)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


@pytest.mark.large
def test_resume_gives_the_same_weights(tfds_dir, tmp_path):
    kw = dict(train_split="train[:256]", epochs=2, schedule="cosine", warmup_epochs=0.5)
    train_lib.train(small_config(tfds_dir, tmp_path / "straight", **kw))
    train_lib.train(small_config(tfds_dir, tmp_path / "resumed", **kw),
                    extra_callbacks=[StopAfterFirstEpoch()])
    assert json.loads((tmp_path / "resumed" / "state.json").read_text())["epochs_done"] == 1
    # Resumed in a new process through the CLI, with only --out and --resume (the run's
    # settings come from its config.json; the resume path registers what it loads).
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "training", "train.py"), "--out",
         str(tmp_path / "resumed"), "--resume", "--data-dir", tfds_dir, "--verbose", "0"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "state.json").read_text())["epochs_done"] == 2
    a = keras.saving.load_model(tmp_path / "straight" / "last.keras")
    b = keras.saving.load_model(tmp_path / "resumed" / "last.keras")
    assert int(a.optimizer.iterations.numpy()) == int(b.optimizer.iterations.numpy()) == 8
    # Deterministic ops + stateless data: exact up to float reassociation.
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-6)


def run_cli(main, argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "ResNet9"], "Unknown model"),
        (["--dataset", "no_such_dataset_xyz"], "Unknown tfds dataset"),
        (["--train-split", "validation"], "Available splits"),
        (["--dataset", "folder:/no/such"], "Image folder not found"),
        (["--epochs", "0"], "--epochs must be an integer between 1 and 100000"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--lr", "-0.1"], "--lr must be > 0"),
        (["--momentum", "-5"], "--momentum must be >= 0"),
        (["--momentum", "1"], "--momentum must be < 1"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
        (["--label-smoothing", "1"], "--label-smoothing must be < 1"),
        (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number"),
        (["--milestones", "5", "3"], "--milestones must be increasing"),
        (["--seed", "-1"], "--seed must be an integer between 0 and 2147483647"),
        (["--epochs", "2", "--warmup-epochs", "3"], "must be shorter than --epochs"),
        (["--resume"], "Cannot resume: " + "{out} holds no run"),
        (["--strategy", "multiworker"], "TF_CONFIG"),
        (["--batch-size", "1000", "--train-split", "train[:10]"], "at most the training split's 10 examples"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tfds_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code, err = run_cli(train_lib.main,
                        argv + ["--data-dir", tfds_dir, "--out", str(tmp_path / "r"), "--verbose", "0"],
                        capsys)
    assert code == 2
    message = message.format(out=tmp_path / "r")
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@pytest.mark.parametrize("extra", ["state.json", "notes.txt"])
def test_existing_run_is_never_overwritten(tfds_dir, tmp_path, capsys, extra):
    """A run that finished an epoch, or a folder with files of the user's, is refused."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / extra).write_text("keep")
    code, err = run_cli(train_lib.main, ["--data-dir", tfds_dir, "--out", str(out)], capsys)
    assert code == 2 and "already holds a run" in err[0]
    assert (out / "config.json").read_text() == "{}" and (out / extra).read_text() == "keep"


def _finished_run(out, **changes):
    """A run folder as train() leaves it after one epoch (the checkpoint is not read)."""
    out.mkdir()
    config = train_lib.TrainConfig(out=str(out), epochs=3, image_size=28).resolved()
    saved = dataclasses.asdict(config) | {"num_classes": 10, "class_names": []} | changes
    (out / "config.json").write_text(json.dumps(saved))
    (out / "state.json").write_text(json.dumps({"epochs_done": 1}))
    (out / "last.keras").write_text("x")


def test_resume_with_other_settings_names_them_all(tfds_dir, tmp_path, capsys):
    out = tmp_path / "r"
    _finished_run(out, model="CRAResNet56")
    code, err = run_cli(train_lib.main, ["--data-dir", tfds_dir, "--out", str(out), "--resume",
                                         "--model", "CRAResNet20", "--weight-decay", "0.5",
                                         "--label-smoothing", "0.2", "--mix", "mixup",
                                         "--milestones", "1", "2", "--verbose", "0"], capsys)
    assert code == 2 and len(err) == 1 and "Cannot resume" in err[0]
    for named in ("--model 'CRAResNet20' (the run has 'CRAResNet56')", "--weight-decay 0.5",
                  "--label-smoothing 0.2", "--mix 'mixup'", "--milestones [1, 2]"):
        assert named in err[0], named
    assert "--verbose" not in err[0]  # documented as allowed to change


@pytest.mark.parametrize("broken, message", [
    ("config.json", "The run's config.json is not readable JSON"),
    # Without state.json the checkpoint tells the epoch (a full disk or a kill between the
    # two writes); this one is not a checkpoint.
    ("state.json", "is not a readable .keras model"),
    ("state-list", "The run's state.json is not a JSON object"),
])
def test_resume_with_broken_run_files(tfds_dir, tmp_path, capsys, broken, message):
    out = tmp_path / "r"
    _finished_run(out)
    if broken == "config.json":
        (out / broken).write_text("{not json")
    elif broken == "state-list":
        (out / "state.json").write_text("[1]")
    else:
        (out / broken).unlink()
        (out / "history.csv").write_text("epoch\n0\n")
    code, err = run_cli(train_lib.main, ["--data-dir", tfds_dir, "--out", str(out), "--resume"],
                        capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_truncated_checkpoint_on_resume(tfds_dir, tmp_path, capsys):
    out = tmp_path / "r"
    _finished_run(out, train_split="train[:64]", eval_split="test[:64]", batch_size=32)
    code, err = run_cli(train_lib.main, ["--data-dir", tfds_dir, "--out", str(out), "--resume",
                                         "--verbose", "0"], capsys)
    assert code == 2 and len(err) == 1 and "is not a readable .keras model" in err[0], err


@pytest.mark.large
def test_finetune_and_evaluate(tfds_dir, tmp_path, capsys):
    source = tmp_path / "source.keras"
    keras.applications  # noqa: B018
    from keras_cra.applications import CRAResNet20

    CRAResNet20(classes=7, input_shape=(28, 28, 3)).save(source)
    metrics = finetune_lib.finetune(finetune_lib.FinetuneConfig(
        model="CRAResNet20", weights=str(source), train_split="train[:128]",
        eval_split="test[:64]", epochs=2, batch_size=32, lr=0.01, data_dir=tfds_dir,
        out=str(tmp_path / "ft"), verbose=0))
    model_path = str(tmp_path / "ft" / "last.keras")
    result, confusion = evaluate_lib.evaluate(model_path, split="test[:64]", data_dir=tfds_dir,
                                              out=str(tmp_path / "ev"))
    assert result["examples"] == 64 and confusion.sum() == 64
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    # The Keras model evaluated directly gives the same top-1.
    assert abs(result["top1"] - metrics["top1"]) < 1e-6
    # --gates: the gate picture of the fine-tuned model, through the CLI.
    code, err = run_cli(evaluate_lib.main, [model_path, "--split", "test[:64]", "--data-dir",
                                            tfds_dir, "--gates", str(tmp_path / "g.png"),
                                            "--gate-images", "16"], capsys)
    assert code == 0, err
    from matplotlib.image import imread

    assert imread(tmp_path / "g.png").std() > 0
    code, err = run_cli(evaluate_lib.main, [model_path, "--gates", str(tmp_path / "g.jpg")],
                        capsys)
    assert code == 2 and "--gates must be a .png path" in err[0], err


def test_evaluate_rejects_non_models(tmp_path, capsys):
    bogus = tmp_path / "x.txt"
    bogus.write_text("hi")
    code, err = run_cli(evaluate_lib.main, [str(bogus)], capsys)
    assert code == 2 and "model must be a .keras file" in err[0]
    truncated = tmp_path / "t.keras"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    code, err = run_cli(evaluate_lib.main, [str(truncated)], capsys)
    assert code == 2 and len(err) == 1 and "is not a readable .keras model" in err[0], err
    code, err = run_cli(evaluate_lib.main, [str(tmp_path / "missing.keras")], capsys)
    assert code == 2 and len(err) == 1 and "model does not exist" in err[0], err


def _run_check(args, env=None, out=None):
    return subprocess.Popen(
        [sys.executable, "-m", "keras_cra.training.distributed_check", *args, "--out", out],
        env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _load(path):
    with open(path) as f:
        return json.load(f)


def _assert_same_training(a, b):
    assert abs(a["loss"] - b["loss"]) < 1e-5
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_allclose(np.array(wa), np.array(wb), atol=1e-5)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.large
def test_mirrored_and_multiworker_match_single_device(tmp_path):
    single = _run_check([], out=str(tmp_path / "single.json"))
    mirrored = _run_check(["--strategy", "mirrored", "--cpu-devices", "2"],
                          out=str(tmp_path / "mirrored.json"))
    for p in (single, mirrored):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        _run_check(["--strategy", "multiworker"],
                   env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": i}})},
                   out=str(tmp_path / f"worker{i}.json"))
        for i in range(2)
    ]
    for p in workers:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    reference = _load(tmp_path / "single.json")
    assert reference["replicas"] == 1
    for name in ("mirrored.json", "worker0.json", "worker1.json"):
        result = _load(tmp_path / name)
        assert result["replicas"] == 2
        _assert_same_training(reference, result)


@pytest.mark.large
def test_main_job_smoke(tfds_dir, tmp_path, capsys):
    """`make demo` (training/demo.py) end to end with a tiny setting."""
    from keras_cra.training import demo as demo_lib

    export_dir = tmp_path / "saved_models" / "demo"
    code = demo_lib.main([
        "--out", str(tmp_path / "run"), "--export-dir", str(export_dir),
        "--train-examples", "512", "--eval-examples", "256", "--epochs", "1",
        "--batch-size", "64", "--verify-examples", "128", "--data-dir", tfds_dir,
        "--max-int8-drop", "-1",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "Export verification" in printed and "keras_cra demo" in printed
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "CRAResNet20" and metrics["epochs"] == 1
    assert metrics["eval_examples"] == 256
    report = json.loads((export_dir / "verification.json").read_text())
    assert set(report["artifacts"]) == {"keras", "saved_model", "float32", "float16",
                                        "dynamic", "int8"}
    assert report["artifacts"]["float32"]["max_abs_diff"] <= 1e-4


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    from keras_cra.training import demo as demo_lib

    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    code = demo_lib.main(["--out", str(out), "--no-export"])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not hold a previous demo run" in err and f"Received: out={str(out)!r}" in err
    assert (out / "thesis.txt").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    assert demo_lib.main(["--out", str(tmp_path / "file"), "--no-export"]) == 2
    assert (tmp_path / "file").read_text() == "x"


def test_demo_replaces_its_own_previous_run(tmp_path):
    from keras_cra.training import demo as demo_lib
    from keras_cra.training.run_folder import DEMO_MARKER, prepare
    from keras_cra.training.train import TrainConfig

    out = tmp_path / "run"
    demo_lib.prepare_out(str(out))
    assert os.listdir(out) == [DEMO_MARKER]
    (out / "last.keras").write_text("old checkpoint")
    demo_lib.prepare_out(str(out))
    assert os.listdir(out) == [DEMO_MARKER]
    # training accepts the fresh demo folder
    assert prepare(TrainConfig(out=str(out))) == (0, None)


@pytest.mark.parametrize("prebuild", [False, True])
def test_train_step_is_traced_once_when_built_before_fit(prebuild):
    """build_optimizer + build_loss_trackers: TensorFlow traces the train step once (without
    them Keras creates variables inside the first trace, and TensorFlow traces it again)."""
    from keras_cra.training.common import build_loss_trackers, build_optimizer

    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(2, name="a")(inputs),
                                 "b": keras.layers.Dense(1, name="b")(inputs)})
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss={"a": "mse", "b": "mse"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = {"a": rng.normal(size=(8, 2)).astype("float32"),
         "b": rng.normal(size=(8, 1)).astype("float32")}
    if prebuild:
        build_optimizer(model)
        build_loss_trackers(model, x[:2], {k: v[:2] for k, v in y.items()})
        assert all(float(v.numpy()) == 0 for v in model.metrics_variables)  # reset after
    traces = []
    train_step = model.train_step
    model.train_step = lambda data: traces.append(1) or train_step(data)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    # If Keras stops tracing twice (prebuild=False), these helpers can go.
    assert len(traces) == (1 if prebuild else 2)


def _iterations(path):
    return int(keras.saving.load_model(path).optimizer.iterations.numpy())


@pytest.mark.large
def test_every_run_folder_state_has_a_way_on(tfds_dir, tmp_path, capsys, monkeypatch):
    """A full disk while epoch 2 is saved, then each state a kill or a full disk can leave:
    the error is one line, the finished epoch is kept, and `--resume` goes on from it."""
    import errno
    import shutil

    out = tmp_path / "full"
    argv = ["--train-split", "train[:128]", "--eval-split", "test[:64]", "--epochs", "2",
            "--batch-size", "64", "--data-dir", tfds_dir, "--out", str(out), "--verbose", "0"]
    real_save, saves = keras.Model.save, []

    def save_until_the_disk_fills(self, filepath, *args, **kwargs):
        saves.append(filepath)
        if len(saves) > 2:  # epoch 1 wrote last.keras and best.keras
            with open(filepath, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save_until_the_disk_fills)
    err = one_error(train_lib.main, argv, capsys)
    monkeypatch.undo()
    assert "disk is full" in err
    assert not [n for n in os.listdir(out) if ".partial-" in n]  # nothing half-written kept
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1
    assert _iterations(out / "last.keras") == 2  # 128 images / 64: epoch 1's checkpoint
    assert not (out / "metrics.json").exists()

    # The state write of a finished epoch failed (no state.json): the checkpoint tells.
    no_state = tmp_path / "no_state"
    shutil.copytree(out, no_state)
    (no_state / "state.json").unlink()
    resume = argv[:-3] + [str(no_state), "--verbose", "0", "--resume"]
    assert train_lib.main(resume) == 0
    assert json.loads((no_state / "state.json").read_text())["epochs_done"] == 2
    assert _iterations(no_state / "last.keras") == 4

    # Killed after the last epoch, before metrics.json: --resume evaluates, trains nothing.
    no_metrics = tmp_path / "no_metrics"
    shutil.copytree(no_state, no_metrics)
    (no_metrics / "metrics.json").unlink()
    # ... and state.json one epoch behind the checkpoint (a kill between the two writes).
    (no_metrics / "state.json").write_text(json.dumps({"epochs_done": 1, "best": {}}))
    assert train_lib.main(argv[:-3] + [str(no_metrics), "--verbose", "0", "--resume"]) == 0
    assert _iterations(no_metrics / "last.keras") == 4  # epoch 2 was not trained again
    assert json.loads((no_metrics / "metrics.json").read_text())["epochs"] == 2
    assert "finished all 2 epochs" in one_error(
        train_lib.main, argv[:-3] + [str(no_metrics), "--verbose", "0", "--resume"], capsys)
