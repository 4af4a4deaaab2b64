"""Paths and files of the command-line tools: checks with errors written for users, and
one rule for writing outputs (atomic, locked, never over what the command did not make)."""

import contextlib
import errno
import json
import os

from keras_cra.errors import UsageError  # noqa: F401 (re-exported)


def check_output_dir(path, flag="--out"):
    """Refuses an output folder that is a file, under a file, or cannot be made."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} must be a folder, but it is a file. Received: {flag}={path}")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} cannot be made: {parent} is a file. Received: {flag}={path}")
    for name in path.split(os.sep):
        if len(name.encode()) > 255:
            raise UsageError(f"{flag} has a name of {len(name.encode())} bytes; the file system "
                             f"takes at most 255. Received: {flag}={path}")
    if len(path.encode()) >= 4096:
        raise UsageError(f"{flag} is {len(path.encode())} bytes long; paths are at most 4095. "
                         f"Received: {flag}={path}")
    if not _writable(parent):
        raise UsageError(f"{flag} cannot be written: {parent} is not writable. "
                         f"Received: {flag}={path}")
    return path


def _writable(folder):
    """Whether a file can be made in `folder` (tried: permissions alone do not tell for
    root, or for a read-only file system)."""
    import tempfile

    if not os.access(folder, os.W_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".keras_cra_write_check-"):
            return True
    except OSError:
        return False


def check_output_file(path, flag="--out", overwrite=False):
    """Refuses an output file whose folder cannot be made, or that exists (unless `overwrite`)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} must be a file, but it is a folder. Received: {flag}={path}")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{flag} already exists; pass --overwrite to replace it, or choose "
                         f"another file. Nothing was overwritten. Received: {flag}={path}")
    check_output_dir(os.path.dirname(path), flag)
    return path


def load_keras_model(path, flag="model", compile=False):
    """Loads a `.keras` file with errors that say what is wrong with it."""
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError(f"{flag} does not exist. Received: {flag}={path}")
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise UsageError(f"{flag} must be a .keras file. Received: {flag}={path}")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as e:
        reason = " ".join(str(e).split())[:200]
        raise UsageError(
            f"{flag} is not a readable .keras model (truncated, corrupt or not a model: "
            f"{type(e).__name__}: {reason}). Received: {flag}={path}"
        ) from e


def read_json(path, what):
    """Reads a JSON object (a dict) of a run folder, with one clear error when it is missing
    or corrupt."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError as e:
        raise UsageError(f"{what} is missing: {path}.") from e
    except (OSError, ValueError) as e:
        raise UsageError(f"{what} is not readable JSON ({e}): {path}.") from e
    if not isinstance(value, dict):
        raise UsageError(f"{what} is not a JSON object: {path}.")
    return value


def sha256_of(path):
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Temporary siblings of an output being written: `.NAME.partial-PID[.EXT]`. One whose
# process is gone was left by a kill and is removed by the next writer of the same output.
PARTIAL = ".partial-"


def _split_name(name):
    """`"model.weights.h5"` -> `("model", ".weights.h5")`: the whole suffix stays, so
    writers that check it (Keras: `.keras`, `.weights.h5`) accept the temporary name."""
    stem, dot, ext = name.lstrip(".").partition(".")
    return (name[:len(name) - len(name.lstrip("."))] + stem), (dot + ext)


def _partial_path(path):
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = _split_name(name)
    return os.path.join(folder, f".{stem}{PARTIAL}{os.getpid()}{ext}")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder, prefix):
    """Removes the entries `PREFIX<pid>...` of `folder` whose process is gone (left by a
    kill -9, which no handler sees)."""
    import shutil

    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix):].split(".")[0].split("-")[0] if entry.startswith(prefix) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            stale = os.path.join(folder, entry)
            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)


def remove_stale_partials(path):
    """Removes the temporary siblings of `path` that killed processes left behind."""

    folder, name = os.path.split(os.path.abspath(path))
    prefixes = {f".{name}{PARTIAL}", f".{_split_name(name)[0]}{PARTIAL}"}
    for prefix in prefixes:
        remove_stale(folder, prefix)


# errno values that mean "no room to write": a full disk, a quota, a file too large.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_no_space(error):
    """Whether `error` is an OSError of a full disk (or quota, or file size limit)."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


@contextlib.contextmanager
def output_lock(path, flag="--out"):
    """Holds a lock on the output `path` (a `.NAME.lock` file beside it) for the block;
    a second writer of the same output is refused."""
    import filelock

    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lock_path = os.path.join(folder, f".{name}.lock")
    lock = filelock.FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as e:
        raise UsageError(f"Another command is writing {path} (it holds {lock_path}); wait for "
                         f"it or choose another output. Received: {flag}={path}") from e
    try:
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            os.remove(lock_path)


@contextlib.contextmanager
def atomic_output(path, flag="--out", overwrite=False, replaceable=None, folder=False):
    """Writes one output file or folder atomically, under a lock.

    Yields a temporary path beside `path` (`.NAME.partial-PID`) to write to;
    when the block ends without an error it is renamed to `path`, so a kill
    or a full disk at any moment leaves either the old output or the new one,
    never a half-written one. On an error (or Ctrl-C, SIGTERM) the temporary
    output is removed. Temporary outputs left by killed processes are removed
    first.

    Args:
        path: the output.
        flag: the flag or argument named in errors.
        overwrite: whether an existing `path` may be replaced. Checked again
            at the rename, so of two writers started together the second is
            refused instead of silently replacing the first.
        replaceable: for a folder, a function `path -> bool`: only a folder
            it accepts is replaced (e.g. an earlier export); others are refused.
        folder: whether the output is a folder.

    Raises:
        UsageError: the output exists (without `overwrite`), or is not replaceable.
        DiskFullError: the disk filled up while writing.
    """
    import shutil

    from keras_cra.errors import DiskFullError

    path = os.path.abspath(os.fspath(path))

    def check():
        if not os.path.lexists(path) or (folder and os.path.isdir(path)
                                         and not os.listdir(path)):
            return
        if not overwrite:
            raise UsageError(f"{flag} already exists; pass --overwrite to replace it, or choose "
                             f"another {'folder' if folder else 'file'}. Nothing was "
                             f"overwritten. Received: {flag}={path}")
        if folder and replaceable is not None and not replaceable(path):
            raise UsageError(f"{flag} holds files this command did not write; choose another "
                             f"folder or empty it yourself. Nothing was deleted. "
                             f"Received: {flag}={path}")

    with output_lock(path, flag):
        check()
        remove_stale_partials(path)
        tmp = _partial_path(path) if not folder else os.path.join(
            os.path.dirname(path), f".{os.path.basename(path)}{PARTIAL}{os.getpid()}")
        if folder:
            os.makedirs(tmp)
        try:
            yield tmp
            check()
            if folder and os.path.isdir(path):
                backup = tmp + ".old"
                os.rename(path, backup)
                os.rename(tmp, path)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                os.replace(tmp, path)
            tmp = None
        except OSError as e:
            if is_no_space(e):
                raise DiskFullError(f"the disk is full: {path} was not written (the earlier "
                                    f"one, if any, is intact). Received: {flag}={path}") from e
            raise
        finally:
            if tmp is not None and os.path.lexists(tmp):
                shutil.rmtree(tmp, ignore_errors=True) if os.path.isdir(tmp) else os.remove(tmp)


def write_json_atomic(path, value):
    """Writes `value` as JSON to `path` through a temporary file and a rename: the old
    file or the new one, never a truncated one. A full disk is a `DiskFullError`."""
    from keras_cra.errors import DiskFullError

    tmp = _partial_path(path)
    try:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_no_space(e):
            raise DiskFullError(f"the disk is full: {path} was not written.") from e
        raise
