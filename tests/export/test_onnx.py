"""The ONNX export format: written with a dynamic batch, verified in onnxruntime."""

import builtins
import json

import numpy as np
import pytest

from keras_cra.export import ExportError, export_model, exporter
from keras_cra.export import cli as export_cli

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    from keras_cra.applications import CRAResNet20

    model = CRAResNet20(weights=None, classes=10)
    out = tmp_path_factory.mktemp("export") / "cra20"
    report = export_model(model, out, dataset=None, variants=["onnx"], latency_repeats=2)
    return model, out, report


@pytest.mark.large
def test_onnx_matches_keras_at_any_batch(onnx_export):
    model, out, report = onnx_export
    assert set(report["artifacts"]) == {"keras", "saved_model", "onnx"}
    row = report["artifacts"]["onnx"]
    assert row["max_abs_diff"] <= 1e-4 and row["top1_agreement"] == 1.0
    assert row["latency_ms_1_thread"] > 0 and row["latency_ms_all_threads"] > 0
    # Independently of the verification code: onnxruntime against Keras' own softmax.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inputs,) = session.get_inputs()
    assert inputs.name == "inputs" and not isinstance(inputs.shape[0], int)
    rng = np.random.default_rng(1)
    for batch in (1, 5):
        x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
        expected = np.asarray(model.predict(x, verbose=0))  # a softmax head
        got = session.run(None, {"inputs": x})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["sha256"]["model.onnx"] == exporter.sha256_of(out / "model.onnx")
    assert not (out / "model_float32.tflite").exists()


def test_missing_extra_is_named_before_any_work(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    monkeypatch.delitem(__import__("sys").modules, "onnxruntime", raising=False)
    with pytest.raises(ExportError, match=r"keras_cra\[onnx\].*Received: variants=\['onnx'\]"):
        export_model("does-not-matter.keras", tmp_path / "out", dataset=None, variants=["onnx"])
    assert not (tmp_path / "out").exists()


def test_variants_are_the_registry():
    assert "onnx" in exporter.VARIANTS and "onnx" not in exporter.DEFAULT_VARIANTS
    with pytest.raises(ExportError, match=r"Valid: .*'onnx'.*Received: variants=\['tf'\]"):
        export_model("x.keras", "out", dataset=None, variants=["tf"])
    parser = export_cli.build_parser()
    assert parser.parse_args(["m.keras", "--variants", "onnx", "int8"]).variants == ["onnx", "int8"]
    assert parser.parse_args(["m.keras"]).variants == list(exporter.DEFAULT_VARIANTS)
