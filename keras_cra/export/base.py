"""The interface of an export format (the registry is `formats.py`).

A format writes one artifact (a file or a folder) from a Keras model, runs it
on a batch of preprocessed images, and states how far its probabilities may
differ from Keras' (`tolerance`, `None` for no bound). `export_model` writes,
verifies and times every registered format the same way.

To add a format: a module with an `ExportFormat` subclass, and one line in
`FORMATS` of `keras_cra/export/formats.py`.
"""

import os

from keras_cra.errors import UserError


class ExportError(UserError):
    """A model, folder or dataset that cannot be exported (message is for users)."""


class ExportFormat:
    """One kind of export artifact.

    Attributes:
        name: the name used by `--variants` and in reports.
        artifact: the file or folder name inside the export folder.
        tolerance: the largest |probability - Keras probability| accepted.
        thread_counts: the thread settings its latency is measured with
            (`None`: the runtime's default).
    """

    name = None
    artifact = None
    tolerance = None
    thread_counts = (None,)

    def write(self, model, path, context):
        """Writes the artifact for `model` to `path`.

        `context` holds `representative_data` (calibration batches) and
        `integer_io` (`"float"`, `"int8"` or `"uint8"`).
        """
        raise NotImplementedError

    def runner(self, path, num_threads=None):
        """`x -> probabilities` for a batch of preprocessed float images."""
        raise NotImplementedError

    def size_mb(self, path):
        if os.path.isdir(path):
            size = sum(os.path.getsize(os.path.join(d, f))
                       for d, _, fs in os.walk(path) for f in fs)
        else:
            size = os.path.getsize(path)
        return round(size / 2**20, 3)
