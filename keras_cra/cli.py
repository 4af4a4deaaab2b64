"""What every command-line tool of keras_cra shares: one error rule, path checks.

A user error (a bad flag, a missing or unreadable file, a folder that must
not be overwritten) is printed as one `error:` line on stderr, with exit code
2 and no traceback. Outputs are checked before any work starts.
"""

import sys

from keras_cra.files import (  # noqa: F401 (re-exported for the commands)
    UsageError,
    check_output_dir,
    check_output_file,
    load_keras_model,
    read_json,
)


def user_error_classes():
    """Every exception class whose message is written for users."""
    from keras_cra.convert.safe_load import CheckpointFormatError, UnsafeCheckpointError
    from keras_cra.convert.torch_weights import ConversionError
    from keras_cra.data import DataError
    from keras_cra.export.exporter import ExportError

    return (UsageError, DataError, ExportError, ConversionError, CheckpointFormatError,
            UnsafeCheckpointError, FileNotFoundError)


def run(fn, resumable=False):
    """Runs `fn()`; user errors become one `error:` line on stderr and exit code 2.

    Args:
        fn: the command, a function of no arguments.
        resumable: whether the command can be continued with `--resume`
            (then Ctrl-C says so).
    """
    try:
        fn()
    except user_error_classes() as e:
        print(f"error: {str(e).strip()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted" + ("; continue with --resume" if resumable else ""), file=sys.stderr)
        return 130
    return 0
