"""What every command-line tool of keras_cra shares: one error rule, signals, path checks.

A user error (`keras_cra.errors.UserError`: a bad flag, a missing or
unreadable file, a folder that must not be overwritten, a full disk) is
printed as one `error:` line on stderr, with exit code 2 and no traceback.
Any other exception is a bug and keeps its traceback. SIGTERM (what a
scheduler, `docker stop` or `kill` sends) stops a command like Ctrl-C.
"""

import contextlib
import signal
import sys
import threading

from keras_cra.errors import DiskFullError, UserError, naming_flags
from keras_cra.files import (  # noqa: F401 (re-exported for the commands)
    UsageError,
    check_output_dir,
    check_output_file,
    is_no_space,
    load_keras_model,
    read_json,
)

# Set by the SIGTERM handler: a `KeyboardInterrupt` raised where Python code runs on behalf
# of C code (a finalizer, a callback of a native library) can be swallowed there, so the
# training loops also read this at every batch (`keras_cra.training.callbacks.fit`).
_SIGTERM_RECEIVED = threading.Event()


def _sigterm_as_interrupt(signum, frame):
    _SIGTERM_RECEIVED.set()
    raise KeyboardInterrupt


def sigterm_received():
    """Whether SIGTERM arrived inside the current `sigterm_as_keyboard_interrupt` block."""
    return _SIGTERM_RECEIVED.is_set()


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt():
    """Within the block, SIGTERM raises `KeyboardInterrupt` (as Ctrl-C does) in the main
    thread, so `finally` blocks and the commands' interrupt handling run."""
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _SIGTERM_RECEIVED.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _SIGTERM_RECEIVED.clear()


def is_disk_full(error):
    """Whether an exception (or one it was raised from) is a full disk."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if is_no_space(error):
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def run(fn, resumable=False, interrupted=None):
    """Runs `fn()`; user errors become one `error:` line on stderr and exit code 2.

    Args:
        fn: the command, a function of no arguments.
        resumable: whether the command can be continued with `--resume`
            (then Ctrl-C and SIGTERM say so).
        interrupted: a function of no arguments returning the line printed on
            Ctrl-C or SIGTERM instead of the default (e.g. how to go on from
            what the run folder holds).
    """
    try:
        with sigterm_as_keyboard_interrupt(), naming_flags():  # errors name the flags
            fn()
    except UserError as e:
        if isinstance(e, DiskFullError) or not is_disk_full(e):
            print(f"error: {str(e).strip()}", file=sys.stderr)
            return 2
        print(f"error: no space left on the disk ({str(e).strip()}); free space and "
              "run the command again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        line = interrupted() if interrupted else (
            "interrupted" + ("; continue with --resume" if resumable
                             else "; nothing half-written was kept, run it again"))
        print(line, file=sys.stderr)
        return 130
    except Exception as e:
        if not is_disk_full(e):
            raise
        print(f"error: no space left on the disk while writing ({type(e).__name__}: "
              f"{' '.join(str(e).split())[:200]}); the command's temporary files were removed "
              "and earlier results are intact. Free space and run it again.", file=sys.stderr)
        return 2
    return 0
