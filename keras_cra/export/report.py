"""What an export writes beside its artifacts, and the table its CLI prints."""

import json
import os
import shutil

from keras_cra.export.serving import PREPROCESSING
from keras_cra.export.safety import sha256_record


def write_sidecars(folder, model, class_names, artifacts, report, source_name, integer_io):
    """`labels.txt`, `metadata.json` (inputs, preprocessing, sha256 of every file) and
    `verification.json`."""
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(class_names) + "\n")
    hashes = sha256_record(folder, artifacts.values())
    metadata = {
        "source_model": source_name or model.name,
        "input_size": list(model.input_shape[1:]),
        "classes": class_names,
        "preprocessing": PREPROCESSING,
        "inputs": {
            "saved_model/serving_default": "uint8 RGB images (N, H, W, 3); preprocessing baked in",
            "saved_model/serving_preprocessed": "float32, preprocessed as `preprocessing` says",
            "onnx": "model.onnx: float32 preprocessed images, any batch, input `inputs`",
            "tflite": "float32 preprocessed images, batch 1"
                      + (f"; model_int8.tflite uses {integer_io} I/O" if integer_io != "float" else ""),
        },
        "outputs": "class probabilities",
        "sha256": hashes,
    }
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    with open(os.path.join(folder, "verification.json"), "w") as f:
        json.dump(report, f, indent=2)


def print_report(report, out_dir):
    """Prints the verification table of `export_model`'s report (for the CLIs)."""
    from rich.console import Console
    from rich.table import Table

    cols = {"size_mb": "MB", "accuracy": "top-1", "top1_agreement": "agree",
            "max_abs_diff": "max|dp|", "latency_ms_1_thread": "ms 1thr",
            "latency_ms_all_threads": "ms all"}
    table = Table(title=f"Export verification ({report['examples']} images) -> {out_dir}")
    table.add_column("artifact", no_wrap=True)
    for header in cols.values():
        table.add_column(header, justify="right", no_wrap=True)
    for name, row in report["artifacts"].items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("-" if v is None else (f"{v:.2e}" if c == "max_abs_diff" else
                                                f"{v:.4f}" if isinstance(v, float) else str(v)))
        table.add_row(name, *cells)
    Console(width=max(100, shutil.get_terminal_size().columns)).print(table)
    drop = report["summary"]["int8_top1_drop"]
    if drop is not None:
        Console().print(f"int8 top-1 accuracy drop vs Keras: {drop:.2f} points")
