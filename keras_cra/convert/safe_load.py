"""Read PyTorch checkpoints without executing anything from the file.

Both `torch.save` formats are read:

- the zip archive (PyTorch >= 1.6): a pickle `data.pkl` plus one raw file
  per tensor storage;
- the legacy format (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`):
  a magic-number pickle, a protocol pickle, a sys-info pickle, the object
  pickle, the list of storage keys, then each storage as an int64 element
  count followed by its raw bytes.

Unpickling normally (`torch.load(weights_only=False)`) can run arbitrary code.
This reader needs no torch. Its unpickler resolves every global the pickle
names through an allow-list of safe stand-ins, and nothing the file names is
ever imported or called:

- tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`) come back
  as NumPy arrays, with bounds-checked geometry;
- plain containers: `collections.OrderedDict`, `collections.Counter`, `set`,
  `frozenset`, `slice`, `object`, empty `bytes`;
- NumPy arrays and scalars pickled inside other objects (e.g. the authors'
  `metrics.RecorderMeter`): `numpy.core.multiarray._reconstruct` / `scalar`
  (and NumPy 2's `numpy._core.multiarray` names), `numpy.ndarray` and
  `numpy.dtype`, only for plain numeric dtypes (bool, int, uint, float,
  complex), and `_codecs.encode` only as `(str, "latin1") -> bytes`, the way
  pickle protocol 2 writes raw bytes. They come back as plain NumPy arrays;
- any other class of a module outside the Python standard library, spelled
  as a class (a CapWords name, such as `metrics.RecorderMeter` or
  `utils.AverageMeter`), becomes an inert stub: it is never imported, and the
  stub ignores its arguments and state and refuses to be called. So does
  `argparse.Namespace`, the one standard-library class stubbed (training
  arguments saved beside the weights).

Everything else makes the whole file be refused with `UnsafeCheckpointError`:
any other name from the standard library or builtins (`os.system`,
`builtins.exec`, `subprocess.Popen`, ...), under Python 3 or Python 2 names
(`__builtin__.exec`, `commands.getoutput`), any lowercase (function) name of
another module (`numpy.load`, `torch.load`), a NumPy array of object or
structured dtype, `_codecs.encode` with another encoding, or a call of a stub.
"""

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
import zlib

import numpy as np

from keras_cra.errors import UserError

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

# The legacy format's first three pickles (torch/serialization.py).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# NumPy dtype kinds that hold plain numbers (no objects, no fields).
_NUMERIC_KINDS = set("biufc")


class UnsafeCheckpointError(UserError):
    """The file references code that a weights file never needs."""


class CheckpointFormatError(UserError):
    """The file is not a readable torch.save checkpoint."""


class InertObject:
    """Stands in for an unknown class: accepts and ignores its state."""

    _qualname = "?"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        raise UnsafeCheckpointError(
            f"Refusing to load: the file calls an object of class `{self._qualname}`; "
            "a weights file never calls objects. Nothing from the file was executed."
        )

    def __repr__(self):
        return f"<inert stub of {self._qualname}>"


def _refuse(what):
    return UnsafeCheckpointError(
        f"Refusing to load: the file references `{what}`, which a weights file never "
        "needs (a pickle can run code this way). Nothing from the file was executed."
    )


class _StorageType:
    def __init__(self, name):
        self.dtype = STORAGE_DTYPES[name]


class _PendingStorage:
    """A storage whose bytes are not read yet (first pass over a legacy file)."""


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if isinstance(storage, _PendingStorage):
        return None
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


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as pickle protocol 2 uses it for raw bytes, and only so."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _refuse(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _NumpyDtype:
    """`numpy.dtype(code, align, copy)` for plain numeric codes only."""

    def __init__(self, code, align=False, copy=True):
        try:
            dtype = np.dtype(code) if isinstance(code, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _NUMERIC_KINDS or dtype.fields or dtype.subdtype:
            raise _refuse(f"numpy.dtype({code!r}) (only plain numeric dtypes are read)")
        self.dtype = dtype

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)):
            raise _refuse(f"numpy.dtype state {state!r} (only plain numeric dtypes are read)")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class _NumpyArrayClass:
    """What `numpy.ndarray` resolves to: only an argument of `_reconstruct`."""


class _NumpyArray:
    """`numpy.core.multiarray._reconstruct(ndarray, (0,), b"b")`, filled by BUILD."""

    def __init__(self, cls, shape, code):
        if cls is not _NumpyArrayClass or tuple(shape) != (0,) or code not in (b"b", "b"):
            raise _refuse(f"numpy.core.multiarray._reconstruct({cls!r}, {shape!r}, {code!r})")
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _NumpyDtype)
                and isinstance(state[4], bytes)):
            raise _refuse("a NumPy array of objects or of an unknown layout")
        _, shape, dtype, fortran, raw = state
        shape = tuple(int(n) for n in shape)
        count = int(np.prod(shape, dtype=np.int64))
        if any(n < 0 for n in shape) or len(raw) != count * dtype.dtype.itemsize:
            raise CheckpointFormatError(
                f"A NumPy array of shape {shape} ({dtype.dtype}) has {len(raw)} bytes of data."
            )
        flat = np.frombuffer(raw, dtype=dtype.dtype, count=count)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy()


def _numpy_scalar(dtype, raw):
    if not isinstance(dtype, _NumpyDtype) or not isinstance(raw, bytes) or (
            len(raw) != dtype.dtype.itemsize):
        raise _refuse("numpy.core.multiarray.scalar of a non-numeric dtype")
    return np.frombuffer(raw, dtype=dtype.dtype, count=1)[0]


def _bytes(*args):
    if args:  # protocol 2 writes only empty bytes as `bytes()`; others via `_codecs.encode`
        raise _refuse(f"builtins.bytes{args!r}")
    return b""


def _copyreg_reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base is not object:
        raise _refuse(f"copyreg._reconstructor({cls!r}, {base!r})")
    return cls()


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("builtins", "bytes"): _bytes,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy", "ndarray"): _NumpyArrayClass,
}
for _numpy_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED[(_numpy_core, "_reconstruct")] = _NumpyArray
    ALLOWED[(_numpy_core, "scalar")] = _numpy_scalar

# Standard-library classes that legitimately appear in checkpoints (training
# arguments); stubbed like unknown classes.
STDLIB_STUBS = {("argparse", "Namespace")}

# Python 2 stdlib modules that `_compat_pickle` does not rename.
_PYTHON2_STDLIB = {
    "__builtin__", "exceptions", "commands", "popen2", "posixfile", "sets", "md5", "sha",
    "new", "imputil", "user", "statvfs", "mimetools", "rfc822", "urllib2", "urlparse",
    "httplib", "cookielib", "thread", "dummy_thread", "cPickle", "cStringIO", "StringIO",
}


def _python3_name(module, name):
    """The Python 3 name of a global, as `pickle` maps Python 2 names."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _stub(module, name):
    return type(name, (InertObject,), {"_qualname": f"{module}.{name}", "__module__": "stub"})


class SafeUnpickler(pickle.Unpickler):
    """Unpickler of the allow-list above; storages come from `load_storage`.

    `load_storage(key, dtype, numel)` returns the storage's NumPy array (or a
    `_PendingStorage` during a first pass over a legacy file).
    """

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages = {}
        self.stubbed = []

    def find_class(self, module, name):
        for key in ((module, name), _python3_name(module, name)):
            if key in ALLOWED:
                return ALLOWED[key]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        py3_module, py3_name = _python3_name(module, name)
        top = py3_module.split(".")[0]
        if (py3_module, py3_name) in STDLIB_STUBS:
            self.stubbed.append(f"{module}.{name}")
            return _stub(module, name)
        if (top in sys.stdlib_module_names or top == "builtins"
                or module.split(".")[0] in _PYTHON2_STDLIB):
            raise _refuse(f"{module}.{name}")
        if not name[:1].isupper() or "." in name:
            # Functions (lowercase by convention) and nested names are never stubbed.
            raise _refuse(f"{module}.{name}")
        self.stubbed.append(f"{module}.{name}")
        return _stub(module, name)

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            return pid[1]  # a pickled nn.Module class (legacy format): its stub
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"Unexpected persistent id in the pickle: {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"Unknown storage type in the pickle: {storage_type!r}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointFormatError(f"Invalid storage size in the pickle: {pid!r}")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        storage = self._storages[key]
        view = pid[5] if len(pid) > 5 else None
        if view is None or isinstance(storage, _PendingStorage):
            return storage
        try:
            _, offset, view_size = view
            offset, view_size = int(offset), int(view_size)
        except (TypeError, ValueError) as e:
            raise CheckpointFormatError(f"Invalid storage view in the pickle: {pid!r}") from e
        if offset < 0 or view_size < 0 or offset + view_size > storage.size:
            raise CheckpointFormatError(f"A storage view reads past its storage: {pid!r}")
        return storage[offset:offset + view_size]

    def load(self):
        obj = super().load()
        return _plain_arrays(obj)


def _plain_arrays(obj):
    """Replaces the `_NumpyArray` holders (filled by BUILD) by their arrays, at any depth
    of dicts, lists and tuples."""
    if isinstance(obj, _NumpyArray):
        return obj.array
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _plain_arrays(v)
    elif isinstance(obj, list):
        obj[:] = [_plain_arrays(v) for v in obj]
    elif type(obj) is tuple:
        return tuple(_plain_arrays(v) for v in obj)
    return obj


def _unpickle(unpickler, path):
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as e:
        raise CheckpointFormatError(f"Cannot unpickle {path}: {e}") from e


def _read_entry(archive, name, path):
    """One zip entry, after checking what the archive declares for it (no encryption, a
    compression method zipfile reads); a bad CRC or a broken stream is one error."""
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise CheckpointFormatError(f"{path}: the entry {name} is encrypted; torch.save never "
                                    "writes encrypted entries.")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointFormatError(f"{path}: the entry {name} uses compression method "
                                    f"{info.compress_type}; torch.save stores entries "
                                    "uncompressed.")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as e:
        raise CheckpointFormatError(f"{path}: the entry {name} is corrupt "
                                    f"({type(e).__name__}: {e}).") from e


def _load_zip(archive, path, max_bytes):
    with archive:
        names = archive.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointFormatError(f"{path} has no single data.pkl; not a torch checkpoint.")
        prefix = pkls[0][: -len("/data.pkl")]
        declared = sum(i.file_size for i in archive.infolist())
        if max_bytes is not None and declared > max_bytes:
            raise CheckpointFormatError(
                f"{path} declares {declared:,} bytes of contents, more than a checkpoint of "
                f"this model can hold ({max_bytes:,}); nothing was inflated.")
        byteorder = "little"
        if f"{prefix}/byteorder" in names:
            try:
                byteorder = _read_entry(archive, f"{prefix}/byteorder", path).decode("ascii")
            except UnicodeDecodeError as e:
                raise CheckpointFormatError(f"{path}: its byteorder record is not text.") from e
        if byteorder != sys.byteorder:
            raise CheckpointFormatError(f"{path} was written on a {byteorder!r}-endian machine.")

        def load_storage(key, dtype, numel):
            name = f"{prefix}/data/{key}"
            if name not in names:
                raise CheckpointFormatError(f"Missing storage {name} in the archive.")
            nbytes = numel * np.dtype(dtype).itemsize
            if archive.getinfo(name).file_size != nbytes:
                raise CheckpointFormatError(
                    f"{path}: storage {key} declares {numel:,} elements ({nbytes:,} bytes) "
                    f"but its entry holds {archive.getinfo(name).file_size:,} bytes.")
            return np.frombuffer(_read_entry(archive, name, path), dtype=dtype)

        unpickler = SafeUnpickler(io.BytesIO(_read_entry(archive, pkls[0], path)), load_storage)
        return _unpickle(unpickler, path), unpickler.stubbed


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy format's header pickles: plain values, no globals at all."""

    def find_class(self, module, name):
        raise _refuse(f"{module}.{name}")


def _load_legacy(f, path):
    def header():
        try:
            return _PlainUnpickler(f).load()
        except UnsafeCheckpointError:
            raise
        except Exception as e:
            raise CheckpointFormatError(f"{path} is a truncated or corrupt legacy "
                                        f"torch.save file: {e}") from e

    if header() != LEGACY_MAGIC_NUMBER:
        raise CheckpointFormatError(
            f"{path} is neither a torch.save zip archive nor a legacy torch.save file "
            "(no magic number)."
        )
    protocol = header()
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise CheckpointFormatError(f"{path}: unknown legacy torch.save protocol {protocol!r}.")
    info = header()
    if isinstance(info, dict) and info.get("little_endian", True) != (sys.byteorder == "little"):
        raise CheckpointFormatError(f"{path} was written on a machine of another byte order.")

    # First pass: which storages the object needs (the bytes come after it).
    start = f.tell()
    needed = {}

    def record(key, dtype, numel):
        needed[key] = (dtype, numel)
        return _PendingStorage()

    _unpickle(SafeUnpickler(f, record), path)
    keys = header()
    if not isinstance(keys, list) or set(keys) != set(needed):
        raise CheckpointFormatError(f"{path}: the storage list does not match the object's "
                                    "storages; the file is corrupt.")
    storages = {}
    size = os.fstat(f.fileno()).st_size
    for key in keys:
        dtype, numel = needed[key]
        count = f.read(8)
        if len(count) != 8 or struct.unpack("<q", count)[0] != numel:
            raise CheckpointFormatError(f"{path}: storage {key} is truncated or corrupt.")
        nbytes = numel * np.dtype(dtype).itemsize
        if nbytes > size - f.tell():
            raise CheckpointFormatError(
                f"{path}: storage {key} declares {numel:,} elements ({nbytes:,} bytes), more "
                f"than the {size - f.tell():,} bytes left in the file; it is corrupt.")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointFormatError(f"{path} is truncated (storage {key}).")
        storages[key] = np.frombuffer(raw, dtype=dtype)

    f.seek(start)
    unpickler = SafeUnpickler(f, lambda key, dtype, numel: storages[key])
    return _unpickle(unpickler, path), unpickler.stubbed


def load(path, max_bytes=None):
    """Loads a `torch.save` checkpoint (zip or legacy); returns `(object, stubbed_names)`.

    Args:
        path: the file.
        max_bytes: the most that the file may declare it holds (zip entries'
            sizes), checked before anything is inflated; `None`: no bound.
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointFormatError(f"Cannot read {path}: {e.strerror}") from e
    with f:
        if zipfile.is_zipfile(f):
            f.seek(0)
            try:
                archive = zipfile.ZipFile(f)
            except zipfile.BadZipFile as e:
                raise CheckpointFormatError(f"{path} is a corrupt zip archive: {e}") from e
            return _load_zip(archive, path, max_bytes)
        f.seek(0)
        if f.read(1) != b"\x80":
            raise CheckpointFormatError(
                f"{path} is not a torch.save checkpoint (neither a zip archive nor a "
                "legacy pickle)."
            )
        f.seek(0)
        return _load_legacy(f, path)
