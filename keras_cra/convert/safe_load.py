"""Read PyTorch checkpoints without executing anything from the file.

A `.pth` / `.pkl` file written by `torch.save` is a zip archive holding a
pickle (`data.pkl`) and raw tensor storages. Unpickling it normally
(`torch.load(weights_only=False)`) can run arbitrary code. This reader needs
no torch at all: its unpickler rebuilds only tensors (as NumPy arrays, with
bounds-checked strides) and plain containers. Any other class from a
non-standard-library module (e.g. the authors' training `recorder`) becomes
an inert stub that ignores its arguments and state. A reference to anything
else in the standard library or builtins (`os.system`, `builtins.exec`,
`subprocess.Popen`, ...), which no weights file needs, makes the whole file
be refused. Nothing from the file is ever called.
"""

import collections
import io
import pickle
import sys
import zipfile

import numpy as np

STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
    """The file references code that a weights file never needs."""


class CheckpointFormatError(ValueError):
    """The file is not a readable torch.save checkpoint."""


class InertObject:
    """Stands in for an unknown class: accepts and ignores everything."""

    _qualname = "?"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return InertObject()

    def __repr__(self):
        return f"<inert stub of {self._qualname}>"


class _StorageType:
    def __init__(self, name):
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, np.ndarray):
        raise CheckpointFormatError("A tensor refers to something that is not a storage.")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
        raise CheckpointFormatError(f"Invalid tensor geometry: size={size}, stride={stride}.")
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise CheckpointFormatError(
                f"A tensor reads past its storage (index {last} of {storage.size})."
            )
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:] if storage.size else storage,
        shape=size, strides=tuple(s * itemsize for s in stride), writeable=False,
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
# Standard-library classes that legitimately appear in checkpoints; stubbed.
STDLIB_STUBS = {("argparse", "Namespace"), ("copyreg", "_reconstructor")}


def _stub(module, name):
    return type(name, (InertObject,), {"_qualname": f"{module}.{name}", "__module__": "stub"})


class SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages = {}
        self.stubbed = []

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        top = module.split(".")[0]
        if (top in sys.stdlib_module_names or top == "builtins") and (module, name) not in STDLIB_STUBS:
            raise UnsafeCheckpointError(
                f"Refusing to load: the file references `{module}.{name}`, which a weights "
                "file never needs (a pickle can run code this way). Nothing from the file "
                "was executed."
            )
        self.stubbed.append(f"{module}.{name}")
        return _stub(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise CheckpointFormatError(f"Unexpected persistent id in the pickle: {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"Unknown storage type in the pickle: {storage_type!r}")
        if key not in self._storages:
            name = f"{self._prefix}/data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError as e:
                raise CheckpointFormatError(f"Missing storage {name} in the archive.") from e
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype)
        return self._storages[key]


def load(path):
    """Loads a `torch.save` zip checkpoint; returns `(object, stubbed_names)`."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CheckpointFormatError(
            f"{path} is not a torch.save zip archive (PyTorch >= 1.6 format). Re-save it with "
            "`torch.save(torch.load(path, weights_only=True), new_path)` in a sandbox."
        ) from e
    except OSError as e:
        raise CheckpointFormatError(f"Cannot read {path}: {e}") from e
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointFormatError(f"{path} has no single data.pkl; not a torch checkpoint.")
        prefix = pkls[0][: -len("/data.pkl")]
        byteorder = archive.read(f"{prefix}/byteorder").decode() if (
            f"{prefix}/byteorder" in archive.namelist()) else "little"
        if byteorder != sys.byteorder:
            raise CheckpointFormatError(f"{path} was written on a {byteorder}-endian machine.")
        unpickler = SafeUnpickler(io.BytesIO(archive.read(pkls[0])), archive, prefix)
        try:
            obj = unpickler.load()
        except (UnsafeCheckpointError, CheckpointFormatError):
            raise
        except Exception as e:
            raise CheckpointFormatError(f"Cannot unpickle {path}: {e}") from e
    return obj, unpickler.stubbed
