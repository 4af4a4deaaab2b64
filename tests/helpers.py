"""Helpers shared by the CLI tests."""

import re

# TensorFlow's native libraries log a few lines at import time, before absl
# logging is initialised, whatever TF_CPP_MIN_LOG_LEVEL says.
_TF_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    r"|To enable the following instructions:)"
)


def own_stderr_lines(stderr):
    """The non-empty lines of `stderr` that our code wrote (TF's native log removed)."""
    return [l for l in stderr.splitlines() if l.strip() and not _TF_NATIVE_LOG.match(l)]


def one_error(main, argv, capsys):
    """Runs a CLI's `main(argv)` in-process; asserts exit code 2 and exactly one `error:` line
    on stderr, and returns that line."""
    code = main(argv)
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]
