"""`training/export.py`: export a trained model and print its verification table."""

import argparse
import os

from keras_cra.export.exporter import DEFAULT_VARIANTS, VARIANTS, export_model, print_report


def _int8_drop_bound(text):
    """`--max-int8-drop` value: points, or `None` (report only) when negative."""
    value = float(text)
    if value != value:
        raise argparse.ArgumentTypeError(f"must be a number. Received: {text}")
    return None if value < 0 else value


def add_max_int8_drop_argument(parser):
    """The `--max-int8-drop` flag shared by the export and demo CLIs."""
    parser.add_argument("--max-int8-drop", type=_int8_drop_bound, default=1.0,
                        help="fail if int8 top-1 drops more points than this "
                             "(negative: report only)")


def build_parser():
    p = argparse.ArgumentParser(
        description="Export a .keras model to SavedModel, TFLite (LiteRT) and ONNX, verified "
                    "against Keras, into saved_models/NAME."
    )
    p.add_argument("model", help="a trained .keras file (e.g. runs/demo/last.keras)")
    p.add_argument("--out", default=None, help="default: saved_models/<model file stem>")
    p.add_argument("--dataset", default="fashion_mnist",
                   help="validation/calibration data (a tfds name or folder:/path; 'none' "
                        "for random inputs only)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--verify-examples", type=int, default=1000)
    p.add_argument("--calibration-batches", type=int, default=8,
                   help="batches of 32 training images for int8 calibration")
    p.add_argument("--int8-io", default="float", choices=["float", "int8", "uint8"])
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS),
                   choices=list(VARIANTS),
                   help="formats besides the SavedModel (default: the TFLite ones; onnx "
                        "needs pip install 'keras_cra[onnx]')")
    add_max_int8_drop_argument(p)
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv=None):
    from keras_cra.cli import run

    a = build_parser().parse_args(argv)
    out = a.out or os.path.join("saved_models", os.path.splitext(os.path.basename(a.model))[0])
    def command():
        report = export_model(
            a.model, out, dataset=None if a.dataset == "none" else a.dataset, split=a.split,
            data_dir=a.data_dir, verify_examples=a.verify_examples,
            calibration_batches=a.calibration_batches, integer_io=a.int8_io,
            variants=a.variants, overwrite=a.overwrite, source_name=a.model,
            max_int8_drop=a.max_int8_drop,
        )
        print_report(report, os.path.abspath(out))

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
