"""Paths and files of the command-line tools: checks with errors written for users."""

import json
import os


class UsageError(ValueError):
    """A user error: printed as one line, exit code 2, no traceback."""


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
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} cannot be written: {parent} is not writable. "
                         f"Received: {flag}={path}")
    return path


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
