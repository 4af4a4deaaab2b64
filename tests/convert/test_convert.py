import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import keras  # noqa: E402

from keras_cra.convert import (  # noqa: E402
    CheckpointFormatError,
    ConversionError,
    UnsafeCheckpointError,
    from_torch_checkpoint,
)
from keras_cra.convert import safe_load  # noqa: E402
from keras_cra.convert.__main__ import main as convert_main  # noqa: E402
from tests.convert import torch_reference as ref  # noqa: E402
from tests.helpers import one_error  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def images(n=2, size=224, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


@pytest.mark.large
def test_authors_cra_resnet50(tmp_path):
    """The authors' checkpoint in the zip format (DataParallel prefix, recorder, optimizer)."""
    model = ref.randomize(ref.AuthorsResNet())
    path = tmp_path / "best_model.pkl"
    ref.save_authors_checkpoint(model, path)
    keras_model = from_torch_checkpoint(str(path), "CRAResNet50")
    keras_model.get_layer("conv2_block1_cra")
    x = images()
    # classifier_activation is softmax by default; compare logits.
    head = keras_model.get_layer("predictions")
    pre = keras.Model(keras_model.input, keras_model.get_layer("avg_pool").output)(x)
    keras_logits = pre.numpy() @ head.kernel.numpy() + head.bias.numpy()
    np.testing.assert_allclose(keras_logits, torch_logits(model, x), atol=1e-4, rtol=0)


@pytest.mark.large
def test_authors_layout_resnext50(tmp_path):
    model = ref.randomize(ref.AuthorsResNet(groups=32, width_per_group=4, classes=10), seed=1)
    path = tmp_path / "rx.pth"
    ref.save_authors_checkpoint(model, path, data_parallel=False)
    keras_model = from_torch_checkpoint(str(path), "CRAResNeXt50", input_shape=(96, 96, 3))
    keras_model.get_layer("predictions").activation = keras.activations.linear
    x = images(size=96)
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), torch_logits(model, x),
                               atol=1e-4, rtol=0)


@pytest.mark.large
def test_torchvision_state_dict_into_plain_backbone(tmp_path):
    model = ref.randomize(ref.TVResNet(), seed=2)
    path = tmp_path / "resnet50.pth"
    torch.save(model.state_dict(), path)
    keras_model = from_torch_checkpoint(str(path), "CRAResNet50")
    assert keras_model.name == "resnet50"
    keras_model.get_layer("predictions").activation = keras.activations.linear
    x = images(seed=3)
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), torch_logits(model, x),
                               atol=1e-4, rtol=0)
    # Into a CRA model: attention layers keep their init, or start near identity.
    cra = from_torch_checkpoint(str(path), "CRAResNet50", attention="cra",
                                near_identity_gates=True)
    kernel, bias = cra.get_layer("conv3_block2_cra").get_weights()
    assert not kernel.any() and np.allclose(bias, 5.0)
    np.testing.assert_array_equal(cra.get_layer("conv3_block2_1_conv").get_weights()[0],
                                  keras_model.get_layer("conv3_block2_1_conv").get_weights()[0])


@pytest.mark.large
def test_wrong_architecture_names_the_keys(tmp_path):
    model = ref.AuthorsResNet()
    path = tmp_path / "c.pth"
    ref.save_authors_checkpoint(model, path)
    with pytest.raises(ConversionError, match=r"not used: \['stage_3\.6\.|missing tensor"):
        from_torch_checkpoint(str(path), "CRAResNet101")
    with pytest.raises(ConversionError, match="expects shapes"):
        from_torch_checkpoint(str(path), "CRAResNeXt50")
    torch.save({"weird.weight": torch.zeros(2)}, tmp_path / "w.pth")
    with pytest.raises(ConversionError, match="Unrecognised checkpoint layout"):
        from_torch_checkpoint(str(tmp_path / "w.pth"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_authors_checkpoint_formats_load(tmp_path, legacy):
    """Both torch.save formats, written by torch itself, as the authors' train.py writes."""
    model = ref.randomize(ref.AuthorsResNet(depths=(1, 1, 1, 1), classes=3), seed=5)
    path = tmp_path / "best_model.pkl"
    ref.save_authors_checkpoint(model, path, legacy=legacy)
    assert zipfile.is_zipfile(path) != legacy
    obj, stubbed = safe_load.load(str(path))
    assert stubbed == ["metrics.RecorderMeter"]
    assert isinstance(obj["recorder"], safe_load.InertObject)
    assert obj["epoch"] == 1
    state = obj["state_dict"]
    assert set(state) == {"module." + k for k in model.state_dict()}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(state["module." + k], v.numpy())
    # The optimizer's momentum buffers and the scheduler's Counter come back as data.
    buffers = [s["momentum_buffer"] for s in obj["optimizer"]["state"].values()]
    assert len(buffers) == len(list(model.parameters())) and any(b.any() for b in buffers)
    assert obj["scheduler"]["milestones"] == collections.Counter({30: 1, 60: 1, 90: 1})
    # Logits of the converted full-size models: test_authors_cra_resnet50 (zip) and
    # test_cli_installs_into_registry_and_imagenet_weights_load (legacy).


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_numpy_values_and_strided_tensors(tmp_path, legacy):
    """NumPy arrays and scalars pickled by NumPy itself (protocol 2: `_reconstruct`,
    `dtype`, `scalar`, raw bytes through `_codecs.encode`) come back as plain arrays."""
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    values = {"t": t, "view": torch.arange(10, dtype=torch.int64)[3:7],
              "a": np.arange(6, dtype=np.float32).reshape(2, 3),
              "f": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
              "b": np.array([True, False]), "big": np.arange(3, dtype=">f8"),
              "empty": np.zeros((0, 4), np.float32), "s": np.float32(2.5), "i": np.int64(-3)}
    path = tmp_path / "v.pth"
    torch.save(values, path, _use_new_zipfile_serialization=not legacy)
    obj, stubbed = safe_load.load(str(path))
    assert stubbed == []
    np.testing.assert_array_equal(obj["t"], t.numpy())
    np.testing.assert_array_equal(obj["view"], np.arange(3, 7))
    for k in ("a", "f", "b", "big", "empty"):
        assert type(obj[k]) is np.ndarray and obj[k].dtype == values[k].dtype, k
        assert obj[k].shape == values[k].shape, k
        np.testing.assert_array_equal(obj[k], values[k])
    assert obj["s"] == np.float32(2.5) and obj["s"].dtype == np.float32
    assert obj["i"] == -3 and obj["i"].dtype == np.int64


def _rename_in_zip(path, old, new):
    """Rewrites data.pkl of a torch.save zip archive, replacing a module name."""
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for n, data in items.items():
            z.writestr(n, data.replace(old, new) if n.endswith("data.pkl") else data)


def test_numpy1_module_names(tmp_path):
    """NumPy 1 pickles name `numpy.core.multiarray`; NumPy 2 `numpy._core.multiarray`.
    The archive is written by torch.save under NumPy 2, then renamed as NumPy 1 names it."""
    path = tmp_path / "np1.pth"
    torch.save({"a": np.arange(4, dtype=np.float32), "s": np.float64(1.25)}, path)
    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"numpy._core.multiarray" in pkl  # the NumPy installed here is 2.x
    _rename_in_zip(path, b"numpy._core.multiarray", b"numpy.core.multiarray")
    obj, _ = safe_load.load(str(path))
    np.testing.assert_array_equal(obj["a"], np.arange(4, dtype=np.float32))
    assert obj["s"] == 1.25


def test_legacy_file_truncated_or_corrupt(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(100)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-8])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        safe_load.load(str(tmp_path / "cut.pth"))
    (tmp_path / "head.pth").write_bytes(data[:40])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        safe_load.load(str(tmp_path / "head.pth"))


def test_object_and_structured_numpy_arrays_are_refused(tmp_path):
    for value in (np.array([1, "x"], dtype=object), np.zeros(2, dtype=[("a", "f4")])):
        torch.save({"v": value}, tmp_path / "o.pth")
        with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
            safe_load.load(str(tmp_path / "o.pth"))


def test_stub_instances_refuse_calls():
    stub = safe_load._stub("metrics", "RecorderMeter")
    with pytest.raises(UnsafeCheckpointError, match="metrics.RecorderMeter"):
        stub()()


class Malicious:
    def __init__(self, target, func=os.system):
        self.target = target
        self.func = func

    def __reduce__(self):
        return (self.func, (f"touch {self.target}",))


class CallsThirdParty:
    """Names a third-party function (lowercase: never stubbed, refused)."""

    def __reduce__(self):
        return (np.load, ("/etc/passwd",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, legacy, capsys):
    target = tmp_path / "pwned"
    state = ref.AuthorsResNet(depths=(1, 1, 1, 1)).state_dict()
    path = tmp_path / "evil.pkl"
    torch.save({"state_dict": state, "recorder": Malicious(target)}, path,
               _use_new_zipfile_serialization=not legacy)
    assert not target.exists()
    with pytest.raises(UnsafeCheckpointError, match="system"):
        from_torch_checkpoint(str(path), "CRAResNet50")
    assert not target.exists()
    # The CLI refuses it too, with a one-line error.
    assert "Refusing to load" in one_error(
        convert_main, [str(path), "--out", str(tmp_path / "x.weights.h5")], capsys)
    assert not target.exists() and not (tmp_path / "x.weights.h5").exists()


@pytest.mark.parametrize("func, named", [
    (exec, b"__builtin__\nexec\n"),
    (eval, b"__builtin__\neval\n"),
    (subprocess.getoutput, b"commands\ngetoutput\n"),
])
def test_python2_names_of_dangerous_functions_are_refused(tmp_path, func, named):
    """Pickle protocol 2 writes Python 3 builtins under their Python 2 names."""
    target = tmp_path / "pwned"
    for legacy in (False, True):
        path = tmp_path / "evil.pth"
        torch.save({"x": Malicious(target, func)}, path, _use_new_zipfile_serialization=not legacy)
        if legacy:
            assert named in path.read_bytes()
        with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
            safe_load.load(str(path))
    assert not target.exists()


def test_third_party_functions_are_refused(tmp_path):
    torch.save({"x": CallsThirdParty()}, tmp_path / "np.pth")
    with pytest.raises(UnsafeCheckpointError, match="numpy.load"):
        safe_load.load(str(tmp_path / "np.pth"))


class _StorageRef:
    """Pickled as a persistent id pointing at storage "0" (4 floats)."""


class _TensorOfSize:
    """Pickles exactly as torch.save pickles a 1-D float tensor, with any size."""

    def __init__(self, size):
        self.size = size

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_StorageRef(), 0, (self.size,), (1,), False, collections.OrderedDict()))


class _CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", torch.FloatStorage, "0", "cpu", 4)
        return None


def _handmade_checkpoint(path, size):
    buffer = io.BytesIO()
    _CheckpointPickler(buffer, protocol=2).dump({"t": _TensorOfSize(size)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/byteorder", sys.byteorder)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", np.arange(4, dtype="float32").tobytes())


def test_out_of_bounds_tensor_is_rejected(tmp_path):
    # The same hand-made archive reads fine when the tensor fits its storage...
    _handmade_checkpoint(tmp_path / "ok.pth", 4)
    np.testing.assert_array_equal(safe_load.load(str(tmp_path / "ok.pth"))[0]["t"],
                                  np.arange(4, dtype="float32"))
    assert torch.equal(torch.load(tmp_path / "ok.pth", weights_only=True)["t"],
                       torch.arange(4, dtype=torch.float32))
    # ...and is refused when it claims 400 elements of a 4-element storage.
    _handmade_checkpoint(tmp_path / "bad.pth", 400)
    with pytest.raises(CheckpointFormatError, match="reads past its storage"):
        safe_load.load(str(tmp_path / "bad.pth"))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointFormatError, match="no magic number"):
        safe_load.load(str(tmp_path / "x.pth"))
    (tmp_path / "y.pth").write_text("hello")
    with pytest.raises(CheckpointFormatError, match="not a torch.save checkpoint"):
        safe_load.load(str(tmp_path / "y.pth"))


@pytest.mark.large
def test_cli_installs_into_registry_and_imagenet_weights_load(tmp_path, monkeypatch, capsys):
    # The authors' file as an October 2020 PyTorch wrote it: the legacy format.
    model = ref.randomize(ref.AuthorsResNet(), seed=4)
    path = tmp_path / "best_model.pkl"
    ref.save_authors_checkpoint(model, path, legacy=True)
    home = tmp_path / "keras_home"
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_HOME=str(home))
    out = subprocess.run([sys.executable, "-m", "keras_cra.convert", str(path), "--model",
                          "CRAResNet50", "--out", str(tmp_path / "cra50.weights.h5"),
                          "--install", "imagenet"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (home / "models" / "cra_resnet50_imagenet.weights.h5").exists()
    monkeypatch.setenv("KERAS_HOME", str(home))
    from keras_cra.applications import CRAResNet50, decode_predictions, preprocess_input

    keras_model = CRAResNet50(weights="imagenet")
    # End to end on natural photos: preprocess, predict, decode the top 5.
    from skimage import data as skdata
    import tensorflow as tf

    photos = np.stack([tf.image.resize(p, (224, 224)).numpy()
                       for p in (skdata.astronaut(), skdata.chelsea())])
    x = preprocess_input(photos.copy())
    probs = keras_model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    logits = torch_logits(model, x.astype("float32"))
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), -1).numpy(),
                               atol=1e-5)
    index = tmp_path / "imagenet_class_index.json"
    index.write_text(json.dumps({str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}))
    decoded = decode_predictions(probs, top=5, class_index_path=str(index))
    assert len(decoded) == 2 and all(len(d) == 5 for d in decoded)
    assert decoded[0][0][0] == f"n{int(probs[0].argmax()):08d}"
    notop = CRAResNet50(weights="imagenet", include_top=False, pooling="avg")
    assert notop.output.shape == (None, 2048)
    # A torchvision state_dict cannot be installed as the CRA `imagenet` weights.
    tv = tmp_path / "tv.pth"
    torch.save(ref.TVResNet().state_dict(), tv)
    capsys.readouterr()
    assert "has no CRA layers" in one_error(convert_main, [str(tv), "--install", "imagenet"],
                                            capsys)


def test_numpy_arrays_nested_at_any_depth(tmp_path):
    """Arrays inside tuples inside lists inside dicts come back as plain arrays."""
    value = {"a": [(np.arange(3), {"b": np.ones(2, np.float32)})], "t": (np.int32(4),)}
    torch.save(value, tmp_path / "n.pth")
    obj, _ = safe_load.load(str(tmp_path / "n.pth"))
    inner = obj["a"][0]
    assert type(inner) is tuple and type(inner[0]) is np.ndarray
    np.testing.assert_array_equal(inner[0], np.arange(3))
    assert type(inner[1]["b"]) is np.ndarray and inner[1]["b"].dtype == np.float32
    assert obj["t"] == (4,)


# ------------------------------------------------------------- damaged or hostile data

def _rewrite_zip(src, dst, change):
    """Copies a torch.save archive entry by entry; `change(info, data)` returns the
    `(info, data)` to write (or `None` to drop the entry)."""
    with zipfile.ZipFile(src) as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w") as out:
        for info, data in entries:
            changed = change(info, data)
            if changed is not None:
                out.writestr(*changed)


def _small_checkpoint(path):
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, path)
    return path


def test_damaged_zip_entries_are_one_error(tmp_path):
    good = _small_checkpoint(tmp_path / "good.pth")
    np.testing.assert_array_equal(safe_load.load(str(good))[0]["w"], np.arange(64, dtype="f4"))
    cases = {
        "byteorder": (lambda i, d: (i, b"\xff\xfe\xfd" if i.filename.endswith("byteorder")
                                    else d), "byteorder record is not text"),
        "bzip2": (lambda i, d: (_with(i, compress_type=zipfile.ZIP_BZIP2), d),
                  "compression method 12"),
        "storage_size": (lambda i, d: (i, d + b"\0" * 8) if "/data/" in i.filename
                         else (i, d), "declares 64 elements"),
    }
    for name, (change, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        _rewrite_zip(good, path, change)
        with pytest.raises(CheckpointFormatError, match=message):
            safe_load.load(str(path))
    # One byte of data.pkl flipped in place (torch.save stores entries uncompressed): the
    # entry no longer matches its CRC.
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    raw[raw.find(pickled) + len(pickled) - 2] ^= 0xFF
    (tmp_path / "crc.pth").write_bytes(bytes(raw))
    with pytest.raises(CheckpointFormatError, match="is corrupt .BadZipFile"):
        safe_load.load(str(tmp_path / "crc.pth"))


def _with(info, **changes):
    copy = zipfile.ZipInfo(info.filename, info.date_time)
    for key, value in changes.items():
        setattr(copy, key, value)
    return copy


def test_encrypted_entry_is_refused(tmp_path):
    good = _small_checkpoint(tmp_path / "good.pth")
    path = tmp_path / "enc.pth"
    _rewrite_zip(good, path, lambda i, d: (i, d))
    raw = bytearray(path.read_bytes())
    # Set the "encrypted" bit (general purpose flag bit 0) in every local and central header.
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at >= 0:
            raw[at + flag_at] |= 0x1
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointFormatError, match="encrypted"):
        safe_load.load(str(path))


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A storage of 64 MiB of zeros deflated into a small file, read with the bound the
    converter derives from the model: refused from the declared sizes alone."""
    from keras_cra.convert import torch_weights

    path = tmp_path / "bomb.pth"
    _handmade_checkpoint(path, 4)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data/1", "w") as entry:
            for _ in range(64):
                entry.write(bytes(1 << 20))
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(CheckpointFormatError, match="declares 67,1"):
        safe_load.load(str(path), max_bytes=32 << 20)
    bound = torch_weights._max_checkpoint_bytes("CRAResNet18")
    assert 2 * 8 * 11_000_000 < bound < 2 << 30  # ResNet-18's size, far below a 2 GiB bomb


def test_legacy_storage_larger_than_the_file_is_refused(tmp_path):
    """The legacy layout (magic, protocol, sys info, object, keys, count + bytes) with a
    storage that declares 10**12 elements: refused before any allocation."""

    class Huge(_CheckpointPickler):
        def persistent_id(self, obj):
            if isinstance(obj, _StorageRef):
                return ("storage", torch.FloatStorage, "0", "cpu", 10**12)
            return None

    buffer = io.BytesIO()
    for value in (safe_load.LEGACY_MAGIC_NUMBER, safe_load.LEGACY_PROTOCOL_VERSION,
                  {"protocol_version": 1001, "little_endian": sys.byteorder == "little",
                   "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(value, buffer, protocol=2)
    Huge(buffer, protocol=2).dump({"t": _TensorOfSize(4)})
    pickle.dump(["0"], buffer, protocol=2)
    buffer.write((10**12).to_bytes(8, "little") + bytes(16))
    (tmp_path / "legacy.pth").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointFormatError, match="more than the 16 bytes left"):
        safe_load.load(str(tmp_path / "legacy.pth"))


@pytest.mark.parametrize("state, message", [
    ({0: torch.zeros(2)}, "keys that are not names"),
    ({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1),
      "fc.weight": torch.zeros(0, 2048)}, r"has shape \(0, 2048\)"),
    ({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1),
      "fc.weight": torch.tensor(1.0)}, r"has shape \(\)"),
    ({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1),
      "fc.weight": torch.zeros(30000, 1)}, "declares 30,000 classes"),
])
def test_malformed_state_dicts_are_one_error(tmp_path, capsys, state, message):
    path = tmp_path / "m.pth"
    torch.save(state, path)
    with pytest.raises(ConversionError, match=message):
        from_torch_checkpoint(str(path), "CRAResNet18")
    out = str(tmp_path / "o.weights.h5")
    one_error(convert_main, [str(path), "--model", "CRAResNet18", "--out", out], capsys)
    assert not os.path.exists(out) and os.listdir(tmp_path) == ["m.pth"]
