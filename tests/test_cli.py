"""Bad input, as a new user gives it: one `error:` line, exit code 2, no file lost."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_cra.export import cli as export_cli
from keras_cra.training import evaluate as evaluate_lib
from keras_cra.training import finetune as finetune_lib
from keras_cra.training import train as train_lib
from tests.helpers import one_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_args(tfds_dir, out, *extra):
    return ["--train-split", "train[:128]", "--eval-split", "test[:64]", "--epochs", "1",
            "--batch-size", "32", "--data-dir", tfds_dir, "--out", str(out), "--verbose", "0",
            *extra]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("the user's file")
    return path


@pytest.fixture
def small_model(tmp_path):
    from keras_cra.applications import CRAResNet20

    path = tmp_path / "small.keras"
    CRAResNet20(classes=10, input_shape=(28, 28, 3), classifier_activation=None).save(path)
    return path


# ------------------------------------------------------------- --out is a file

@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
def test_out_that_is_a_file(tfds_dir, tmp_path, capsys, a_file, small_model, under):
    out = a_file / "run" if under else a_file
    expect = "is a file" if under else "it is a file"
    assert expect in one_error(train_lib.main, small_args(tfds_dir, out), capsys)
    assert expect in one_error(finetune_lib.main, small_args(tfds_dir, out, "--weights",
                                                             str(small_model), "--epochs", "2"),
                               capsys)
    assert expect in one_error(evaluate_lib.main, [str(small_model), "--out", str(out),
                                                   "--data-dir", tfds_dir], capsys)
    assert expect in one_error(export_cli.main, [str(small_model), "--out", str(out),
                                                 "--data-dir", tfds_dir], capsys)
    assert a_file.read_text() == "the user's file"


def test_convert_out_is_a_file_or_exists(tmp_path, capsys, a_file):
    from keras_cra.convert.__main__ import main as convert_main

    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"unused: the output is checked first")
    err = one_error(convert_main, [str(ckpt), "--out", str(a_file / "w.weights.h5")], capsys)
    assert "is a file" in err
    existing = tmp_path / "w.weights.h5"
    existing.write_text("earlier weights")
    err = one_error(convert_main, [str(ckpt), "--out", str(existing)], capsys)
    assert "already exists; pass --overwrite" in err
    assert existing.read_text() == "earlier weights"
    err = one_error(convert_main, [str(ckpt), "--model", "CRAResNet51", "--out",
                                   str(tmp_path / "x.weights.h5")], capsys)
    assert "Unknown model" in err and "CRAResNet51" in err
    err = one_error(convert_main, [str(tmp_path / "nope.pth"), "--out",
                                   str(tmp_path / "x.weights.h5")], capsys)
    assert "checkpoint does not exist" in err


# ------------------------------------------------------------- export

@pytest.mark.parametrize("argv, message", [
    (["--dataset", "fashion_mnistt"], "Unknown tfds dataset"),
    (["--split", "tset"], "Unknown split"),
    (["--verify-examples", "0"], "--verify-examples must be an integer >= 1"),
    (["--calibration-batches", "0"], "--calibration-batches must be an integer >= 1"),
])
def test_export_bad_flags(tfds_dir, tmp_path, capsys, small_model, argv, message):
    out = tmp_path / "export"
    err = one_error(export_cli.main, [str(small_model), "--out", str(out), "--data-dir",
                                      tfds_dir, "--variants", "float32", *argv], capsys)
    assert message in err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".export")]


def test_export_never_deletes_files_it_did_not_make(tmp_path, capsys, small_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        err = one_error(export_cli.main, [str(small_model), "--out", str(out), "--dataset",
                                          "none", *extra], capsys)
        assert "not an earlier export" in err and "Nothing was deleted" in err
    assert os.listdir(out) == ["thesis.txt"]


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_model_path_errors(tmp_path, capsys, command):
    main = evaluate_lib.main if command == "evaluate" else export_cli.main
    err = one_error(main, [str(tmp_path / "missing.keras")], capsys)
    assert "does not exist" in err
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"")
    err = one_error(main, [str(bad)], capsys)
    assert "is not a readable .keras model" in err


# ------------------------------------------------------------- run folders

def test_second_training_on_the_same_folder_is_refused(tfds_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import filelock, sys, time\n"
         f"lock = filelock.FileLock({str(out / '.lock')!r}); lock.acquire()\n"
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = one_error(train_lib.main, small_args(tfds_dir, out), capsys)
        assert "Another training is running" in err
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(out) == [".lock"]


def test_nan_loss_stops_the_run_and_the_folder_can_be_rerun(tfds_dir, tmp_path, capsys):
    out = tmp_path / "run"
    err = one_error(train_lib.main, small_args(tfds_dir, out, "--lr", "1e30"), capsys)
    assert "loss became NaN or infinite at epoch 1" in err and "Lower --lr" in err
    assert not (out / "last.keras").exists() and not (out / "metrics.json").exists()
    # No epoch finished: --resume says how to proceed, and a rerun replaces the run.
    err = one_error(train_lib.main, small_args(tfds_dir, out, "--resume"), capsys)
    assert "Start it again without --resume" in err
    assert train_lib.main(small_args(tfds_dir, out)) == 0
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1


def test_checkpoint_write_is_atomic(tmp_path):
    from keras_cra.training.callbacks import AtomicCheckpoint

    path = tmp_path / "last.keras"
    path.write_text("previous epoch")

    class Killed(Exception):
        pass

    class DiesWhileSaving(keras.Model):
        def save(self, filepath, **kwargs):
            with open(filepath, "w") as f:
                f.write("half a checkp")
            raise Killed()

    callback = AtomicCheckpoint(str(path))
    callback.set_model(DiesWhileSaving())
    with pytest.raises(Killed):
        callback.on_epoch_end(0, {"loss": 1.0})
    assert path.read_text() == "previous epoch"
    # A NaN epoch writes nothing either.
    callback.on_epoch_end(1, {"loss": float("nan")})
    assert path.read_text() == "previous epoch"


def test_finetune_rejects_nonsense(tfds_dir, tmp_path, capsys, small_model):
    for flags, message in ((["--lr", "nan"], "--lr must be a finite number"),
                           (["--stage2-lr-factor", "inf"], "--stage2-lr-factor must be a finite"),
                           (["--momentum", "-5"], "--momentum must be >= 0")):
        err = one_error(finetune_lib.main, small_args(tfds_dir, tmp_path / "ft", "--weights",
                                                      str(small_model), "--epochs", "2", *flags),
                        capsys)
        assert message in err


# ------------------------------------------------------------- image folders

def _image_folder(root, bad=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                    folder / f"{i}.jpg")
    return root


def test_bad_images_are_named_before_training(tmp_path, capsys):
    root = _image_folder(tmp_path / "photos")
    good = (root / "train" / "cat" / "0.jpg").read_bytes()
    (root / "train" / "cat" / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "train" / "dog" / "2.jpg").write_bytes(b"")  # zero bytes
    (root / "train" / "dog" / "3.jpg").write_bytes(b"GIF89a not really")  # corrupt
    err = one_error(train_lib.main, ["--model", "CRAResNet20", "--dataset", f"folder:{root}",
                                     "--out", str(tmp_path / "run"), "--verbose", "0"], capsys)
    assert "3 of 8 images" in err
    for name in ("train/cat/1.jpg", "train/dog/2.jpg (empty file)", "train/dog/3.jpg"):
        assert name in err


def test_empty_class_folder_is_refused(tmp_path, capsys):
    from keras_cra import data

    root = _image_folder(tmp_path / "photos")
    (root / "train" / "bird").mkdir()
    with pytest.raises(data.DataError, match=r"Class folders without images .*train/bird"):
        data.load(f"folder:{root}", "test")


# ------------------------------------------------------------- weights

@pytest.mark.parametrize("attention", ["se", None])
def test_registered_cra_weights_refuse_another_attention(attention):
    from keras_cra.applications import CRAResNet50

    with pytest.raises(ValueError, match="hold trained 'cra' attention"):
        CRAResNet50(weights="imagenet", attention=attention)


@pytest.mark.parametrize("flag", ["--resume", "--strategy", "--mixed-precision"])
def test_finetune_has_its_own_flags(flag, capsys):
    """Flags of training that fine-tuning would ignore are unknown to it, not accepted."""
    argv = ["--weights", "x.keras", flag] + ([] if flag == "--resume" else ["auto"])
    with pytest.raises(SystemExit) as exit_info:
        finetune_lib.main(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
