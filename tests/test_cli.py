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
from tests.helpers import one_error, own_stderr_lines

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


@pytest.mark.large
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


# ------------------------------------------------------------- outputs are never replaced

def test_evaluate_never_replaces_earlier_results(tfds_dir, tmp_path, capsys, small_model):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "eval_metrics.json").write_text("earlier")
    argv = [str(small_model), "--split", "test[:32]", "--data-dir", tfds_dir]
    assert "--overwrite" in one_error(evaluate_lib.main, argv + ["--out", str(out)], capsys)
    photo = tmp_path / "my_photo.png"
    photo.write_bytes(b"the user's photo")
    assert "--gates already exists" in one_error(evaluate_lib.main,
                                                 argv + ["--gates", str(photo)], capsys)
    assert (out / "eval_metrics.json").read_text() == "earlier"
    assert photo.read_bytes() == b"the user's photo"
    # A folder no one can write (read-only even for root), checked before the evaluation.
    assert "is not writable" in one_error(
        evaluate_lib.main, argv + ["--gates", "/proc/keras_cra_gates.png"], capsys)
    assert "at most 255" in one_error(
        evaluate_lib.main, argv + ["--out", str(tmp_path / ("x" * 300))], capsys)
    assert evaluate_lib.main(argv + ["--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "eval_metrics.json").read_text())["examples"] == 32
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "eval_metrics.json"]


def test_detect_app_never_writes_over_the_image(tmp_path, capsys):
    from keras_cra.detection import inference as detect_app

    model = tmp_path / "detector"  # only its metadata is read before the refusals
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"image_size": 64, "class_names": ["a"]}))
    image = tmp_path / "img.png"
    image.write_bytes(b"the user's image")
    err = one_error(detect_app.main, [str(image), "--model", str(model), "--out",
                                      str(image), "--overwrite"], capsys)
    assert "--out is the input image" in err
    (tmp_path / "img.detections.png").write_bytes(b"an earlier drawing")
    assert "--overwrite" in one_error(detect_app.main, [str(image), "--model", str(model)],
                                      capsys)
    assert image.read_bytes() == b"the user's image"
    assert (tmp_path / "img.detections.png").read_bytes() == b"an earlier drawing"


# ------------------------------------------------------------- flags within what the code can do

@pytest.mark.parametrize("flags, message", [
    (["--seed", "4294967296"], "--seed must be an integer between 0 and 2147483647"),
    (["--seed", "-1"], "--seed must be an integer between 0"),
    (["--batch-size", "1000"], "at most the training split's 128 examples"),
    (["--batch-size", str(10**30)], "--batch-size must be an integer between 1 and 65536"),
    (["--image-size", "100000"], "--image-size must be an integer between 1 and 1024"),
    (["--image-size", "1000", "--batch-size", "128"], "needs about 143 GiB for the activations"),
    (["--epochs", "2", "--milestones", "1", str(10**30)], "--milestones must be within"),
    (["--weight-decay", "1e308"], "--weight-decay must be < 1"),
    (["--train-split", "train[:0]"], "holds no examples"),
    (["--eval-split", "test[:0]"], "holds no examples"),
])
def test_train_flags_bounded_before_work(tfds_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert message in one_error(train_lib.main, small_args(tfds_dir, out, *flags), capsys)
    assert not (out / "last.keras").exists()


def test_other_commands_bound_their_flags(tfds_dir, tmp_path, capsys, small_model):
    from keras_cra import inference
    from keras_cra.training import detect as detect_lib

    assert "--head-convs must be an integer between 1 and 8" in one_error(
        detect_lib.main, ["--quick", "--head-convs", str(10**30), "--out", str(tmp_path / "d")],
        capsys)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert "--threads must be between 1 and 256" in one_error(
        inference.main, [str(image), "--model", str(small_model), "--threads", "100000"], capsys)
    assert "--batch-size must be an integer between 1 and 65536" in one_error(
        evaluate_lib.main, [str(small_model), "--data-dir", tfds_dir, "--batch-size",
                            str(10**30)], capsys)
    assert "holds no examples" in one_error(
        evaluate_lib.main, [str(small_model), "--data-dir", tfds_dir, "--split", "test[:0]"],
        capsys)


def test_classify_names_bad_files_and_goes_on(tmp_path, capsys, small_model):
    from PIL import Image

    from keras_cra import inference

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (28, 28, 4), dtype=np.uint8), "RGBA").save(
        folder / "b_rgba.png")
    (folder / "c_truncated.png").write_bytes((folder / "a.png").read_bytes()[:40])
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # junk: not an image
    Image.new("L", (9000, 8000)).save(folder / "d_huge.png")  # 72 MP in a small file
    assert inference.main([str(folder), "--model", str(small_model)]) == 0
    out, err = capsys.readouterr()
    assert "a.png" in out and "b_rgba.png" in out and "._a.png" not in out + err
    assert "c_truncated.png" in err and "cannot be read as an image" in err
    assert "d_huge.png is 9000x8000 pixels" in err
    assert "2 of 4 images could not be read" in err


# ------------------------------------------------------------- SIGTERM is Ctrl-C

@pytest.mark.large
def test_sigterm_before_the_first_epoch_says_how_to_go_on(tfds_dir, tmp_path, capsys):
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "training", "train.py"),
         *small_args(tfds_dir, out, "--epochs", "50")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + 240
    while not (out / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr[-2000:]
    last = own_stderr_lines(stderr)[-1]
    assert "before the first epoch finished" in last and "without --resume" in last, last
    assert "Traceback" not in stderr
    assert not [n for n in os.listdir(out) if ".partial-" in n]
    # --resume names the way on; a rerun replaces the unfinished run.
    assert "Start it again without --resume" in one_error(
        train_lib.main, small_args(tfds_dir, out, "--resume"), capsys)
    assert train_lib.main(small_args(tfds_dir, out)) == 0
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1


# ------------------------------------------------------------- the keras-cra command

def test_keras_cra_command_dispatches_every_subcommand(capsys):
    from keras_cra import commands

    for name in commands.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            commands.main([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: keras-cra {name}" in capsys.readouterr().out, name
    assert commands.main(["--help"]) == 0 and "train-detector" in capsys.readouterr().out
    assert commands.main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert commands.main([]) == 2
