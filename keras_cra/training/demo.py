"""The main job, end to end: train CRAResNet20 on Fashion-MNIST, evaluate, export.

Runs offline on Debian's Fashion-MNIST files in a few minutes on 2 CPU cores:
train (model.fit, cosine schedule), evaluate on the test split, export to
SavedModel and four TFLite variants with verification, and print the tables.
"""

import argparse
import os
import shutil
import time

from keras_cra.cli import run
from keras_cra.export.cli import add_max_int8_drop_argument
from keras_cra.layers.registry import attention_choices
from keras_cra.training.common import UsageError, print_table
from keras_cra.training.config import progress_verbosity
from keras_cra.training.run_folder import DEMO_MARKER


def prepare_out(out):
    """Empties `out` for a new demo run; refuses a folder the demo did not make."""
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UsageError(f"--out {out} is a file, not a folder. Received: out={out!r}")
        if os.listdir(out) and not os.path.exists(os.path.join(out, DEMO_MARKER)):
            raise UsageError(
                f"--out {out} is not empty and does not hold a previous demo run; "
                f"delete it yourself or choose another --out. Nothing was deleted. "
                f"Received: out={out!r}"
            )
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(out, DEMO_MARKER), "w") as f:
        f.write("made by keras_cra.training.demo; the next demo run replaces this folder\n")


def demo(out="runs/demo", export_dir="saved_models/cra_resnet20_fashion_mnist",
         train_examples=60000, eval_examples=10000, epochs=3, batch_size=128,
         data_dir=None, attention="cra", verify_examples=1000, fresh=True, export=True,
         max_int8_drop=1.0, verbose=None):
    """Runs the main job; returns `{"summary", "metrics", "report"}` (report: the export's
    verification, `None` without export)."""
    from keras_cra.training import train as train_lib

    if fresh:
        prepare_out(out)
    start = time.time()
    config = train_lib.TrainConfig(
        model="CRAResNet20", attention=attention, dataset="fashion_mnist",
        train_split=f"train[:{train_examples}]", eval_split=f"test[:{eval_examples}]",
        epochs=epochs, batch_size=batch_size, lr=0.1, schedule="cosine",
        warmup_epochs=min(0.5, epochs / 4), data_dir=data_dir, out=out,
        verbose=progress_verbosity(verbose),
    )
    metrics = train_lib.train(config)
    summary = {"train_examples": train_examples, "epochs": epochs, "top1": metrics["top1"],
               "top5": metrics["top5"], "train_seconds": metrics["train_seconds"]}
    report = None
    if export:
        from keras_cra.export import exporter

        report = exporter.export_model(
            os.path.join(out, "last.keras"), export_dir, dataset="fashion_mnist",
            data_dir=data_dir, verify_examples=verify_examples, overwrite=True,
            source_name="CRAResNet20 trained by `make demo`", max_int8_drop=max_int8_drop,
        )
        summary["export_dir"] = export_dir
        summary["int8_top1_drop"] = report["summary"]["int8_top1_drop"]
    summary["total_seconds"] = round(time.time() - start, 1)
    return {"summary": summary, "metrics": metrics, "report": report}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--export-dir", default="saved_models/cra_resnet20_fashion_mnist")
    p.add_argument("--train-examples", type=int, default=60000)
    p.add_argument("--eval-examples", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--verify-examples", type=int, default=1000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--attention", default="cra", choices=attention_choices())
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                   help="training progress: 1 a bar per step, 2 one line per epoch "
                        "(default: 1 in a terminal, else 2)")
    add_max_int8_drop_argument(p)
    a = p.parse_args(argv)

    def command():
        result = demo(a.out, a.export_dir, a.train_examples, a.eval_examples, a.epochs,
                      a.batch_size, a.data_dir, a.attention, a.verify_examples,
                      export=not a.no_export, max_int8_drop=a.max_int8_drop, verbose=a.verbose)
        print_table(f"Final evaluation ({a.out})", result["metrics"])
        if result["report"] is not None:
            from keras_cra.export.exporter import print_report

            print_report(result["report"], os.path.abspath(a.export_dir))
        print_table("keras_cra demo: CRAResNet20 on Fashion-MNIST", result["summary"])

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
