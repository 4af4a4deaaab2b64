"""The one base of every error whose message is written for users.

Every command-line tool prints a `UserError` as one `error:` line with exit
code 2 and no traceback (`keras_cra.cli.run`); anything else is a bug and
keeps its traceback. Library functions name the argument in their messages;
the commands name the flag (`naming_flags`). This module imports nothing of keras_cra, so
every layer of the package can raise these.
"""


import contextlib
import contextvars

# Whether setting errors name a command's flags (`--batch-size 0`) or a function's arguments
# (`batch_size=0`): the commands set it (`keras_cra.cli.run`), library calls keep arguments.
_NAMING_FLAGS = contextvars.ContextVar("keras_cra_naming_flags", default=False)


@contextlib.contextmanager
def naming_flags():
    """Inside this block, errors that name settings name the command-line flags."""
    token = _NAMING_FLAGS.set(True)
    try:
        yield
    finally:
        _NAMING_FLAGS.reset(token)


def names_flags():
    """Whether errors should name command-line flags (see `naming_flags`)."""
    return _NAMING_FLAGS.get()


def option(name):
    """The command-line option of a setting: `"batch_size"` -> `"--batch-size"`."""
    return "--" + name.replace("_", "-")


def flag(name):
    """How errors name a setting: `"--batch-size"` in a command (inside `naming_flags()`,
    which `keras_cra.cli.run` sets), else the argument `"batch_size"`."""
    return option(name) if names_flags() else name


def received(name, value):
    """`Received: --batch-size 0` (a command) or `Received: batch_size=0` (a library call)."""
    return (f"Received: {flag(name)} {value}" if names_flags()
            else f"Received: {name}={value!r}")


class UserError(ValueError):
    """An input, file or setting that cannot be used; the message says what to do."""


class ArgumentError(UserError):
    """A library function's argument outside its domain. A `ValueError`, as Keras' own
    argument errors are; the message names the argument (`Received: name=value`)."""


class UsageError(UserError):
    """A bad flag, argument, path or run folder."""


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or a quota) is full; nothing half-written was kept."""


class UnsafeModelError(UserError):
    """A model file would run code that a model never needs (file, process or network I/O)."""


class ModelIntegrityError(UserError):
    """A model file differs from what its export recorded (size or sha256)."""
