"""One rule for every output: written beside the target, renamed when whole, locked against
a second writer, never over what the command did not make; a full disk is one error."""

import errno
import json
import os
import subprocess
import sys
import threading

import pytest

from keras_cra import cli
from keras_cra.errors import DiskFullError, UsageError
from keras_cra.files import atomic_output, output_lock, remove_stale_partials, write_json_atomic


def test_file_is_renamed_into_place_only_when_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, overwrite=True) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".json")
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]  # the temporary file is gone
    with atomic_output(target, overwrite=True) as tmp:
        open(tmp, "w").write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["report.json"]


def test_keeps_compound_suffixes_for_writers_that_check_them(tmp_path):
    with atomic_output(tmp_path / "model.weights.h5") as tmp:
        assert tmp.endswith(".weights.h5")
        open(tmp, "w").write("x")


def test_existing_output_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "photo.png"
    target.write_text("the user's photo")
    with pytest.raises(UsageError, match="already exists; pass --overwrite"):
        with atomic_output(target, "--gates"):
            pass
    assert target.read_text() == "the user's photo"


def test_an_output_made_meanwhile_is_not_replaced(tmp_path):
    """Two writers started together: the check is made again at the rename."""
    target = tmp_path / "out"
    with pytest.raises(UsageError, match="already exists"):
        with atomic_output(target, folder=True) as tmp:
            open(os.path.join(tmp, "a"), "w").write("mine")
            target.mkdir()
            (target / "b").write_text("theirs")
    assert os.listdir(target) == ["b"]
    assert [n for n in os.listdir(tmp_path) if n != "out"] == []


def test_folder_replaced_only_if_replaceable(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("the user's notes")
    with pytest.raises(UsageError, match="did not write"):
        with atomic_output(target, overwrite=True, replaceable=lambda p: False, folder=True):
            pass
    assert (target / "notes.txt").read_text() == "the user's notes"
    with atomic_output(target, overwrite=True, replaceable=lambda p: True, folder=True) as tmp:
        open(os.path.join(tmp, "model"), "w").write("m")
    assert os.listdir(target) == ["model"] and os.listdir(tmp_path) == ["export"]


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    target = tmp_path / "out.png"
    inside, release = threading.Event(), threading.Event()

    def first():
        with atomic_output(target) as tmp:
            open(tmp, "w").write("first")
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    try:
        # A second process (filelock is per process and file).
        code = ("import sys; from keras_cra.files import atomic_output\n"
                "try:\n"
                f"    with atomic_output({str(target)!r}) as t: open(t, 'w').write('second')\n"
                "except ValueError as e: print(e); sys.exit(3)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
    finally:
        release.set()
        thread.join()
    assert done.returncode == 3 and "Another command is writing" in done.stdout
    assert target.read_text() == "first"


def test_partials_of_killed_processes_are_removed(tmp_path):
    target = tmp_path / "last.keras"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".last.partial-{dead}.keras"
    live = tmp_path / f".last.partial-{os.getppid()}.keras"  # a running process: kept
    stale.write_text("x")
    live.write_text("y")
    remove_stale_partials(target)
    assert not stale.exists() and live.exists()


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_a_disk_full_error_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"epochs_done": 1})
    monkeypatch.setattr(json, "dump", _full_disk)
    with pytest.raises(DiskFullError, match="disk is full"):
        write_json_atomic(target, {"epochs_done": 2})
    with pytest.raises(DiskFullError):
        with atomic_output(tmp_path / "model.keras") as tmp:
            open(tmp, "w").write("part")
            _full_disk()
    assert json.loads(target.read_text()) == {"epochs_done": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_cli_prints_a_full_disk_as_one_line(capsys):
    import tensorflow as tf

    def command():  # what TensorFlow raises from a full disk inside a SavedModel write
        raise tf.errors.ResourceExhaustedError(None, None, "saved_model.pb; No space left on device")

    assert cli.run(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no space left on the disk")


def test_cli_keeps_the_traceback_of_a_bug():
    def command():
        raise ValueError("an internal bug, not a user error")

    with pytest.raises(ValueError, match="internal bug"):
        cli.run(command)


def test_output_lock_is_removed_after_use(tmp_path):
    with output_lock(tmp_path / "x"):
        assert os.path.exists(tmp_path / ".x.lock")
    assert not os.path.exists(tmp_path / ".x.lock")
