"""Fine-tune pretrained CRA models on a new dataset in two stages.

Stage 1 trains a new head on a frozen backbone (BatchNorm in inference
mode); stage 2 unfreezes the backbone and trains everything at a lower LR
(BatchNorm stays in inference mode, as in Keras' transfer-learning guide).
"""

import argparse
import dataclasses
import os

from keras_cra.cli import check_output_dir, run
from keras_cra.files import atomic_output, write_json_atomic
from keras_cra.training import callbacks as callbacks_lib
from keras_cra.training import run_folder
from keras_cra.training import train as train_lib
from keras_cra.training.common import UsageError, configure_determinism, print_table
from keras_cra.training.config import check_finite, config_from_args, flag, received


@dataclasses.dataclass
class FinetuneConfig(train_lib.TrainConfig):
    weights: str | None = None
    stage1_epochs: int = 1
    stage2_lr_factor: float = 0.1


def build_backbone(config):
    from keras_cra.applications import zoo

    if not config.weights:
        raise UsageError(f"{flag('weights')} is required (a registered name or a "
                         f".keras/.weights.h5 file). {received('weights', config.weights)}")
    return zoo.get_model(  # its errors for users are UserErrors already
        config.model, include_top=False, weights=config.weights,
        input_shape=(config.image_size, config.image_size, 3),
        attention=config.attention,
    )


def finetune(config):
    """Two-stage fine-tuning into a new run folder; returns the final metrics."""
    config = config.resolved()
    train_lib.validate(config)
    if not isinstance(config.stage1_epochs, int) or not 1 <= config.stage1_epochs < config.epochs:
        raise UsageError(
            f"{flag('stage1_epochs')} must be in [1, {flag('epochs')}). "
            f"{received('stage1_epochs', config.stage1_epochs)}")
    check_finite("stage2_lr_factor", config.stage2_lr_factor, low=0, low_open=True)
    check_output_dir(config.out)
    with run_folder.lock(config.out):
        run_folder.prepare(dataclasses.replace(config, resume=False))
        return _finetune(config)


def _finetune(config):
    import keras

    from keras_cra import data

    configure_determinism(config.seed)
    train_ds, eval_ds, info, eval_info, _, image_size = train_lib.datasets(config)
    config = dataclasses.replace(config, image_size=image_size)
    steps = data.steps_per_epoch(info.num_examples, config.batch_size)
    backbone = build_backbone(config)
    inputs = keras.Input(backbone.input_shape[1:])
    x = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(info.num_classes, name="predictions")(x)
    model = keras.Model(inputs, outputs, name=backbone.name + "_finetuned")

    def fit(lr, initial_epoch, epochs):
        train_lib.compile_model(model, dataclasses.replace(config, lr=lr, milestones=[]), steps)
        return callbacks_lib.fit(
            model, [keras.callbacks.CSVLogger(os.path.join(config.out, "history.csv"),
                                              append=initial_epoch > 0)],
            x=train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
            validation_data=eval_ds, verbose=config.verbose,
            shuffle=False,  # the pipeline shuffles, deterministically per epoch
        )

    backbone.trainable = False
    fit(config.lr, 0, config.stage1_epochs)
    backbone.trainable = True
    fit(config.lr * config.stage2_lr_factor, config.stage1_epochs, config.epochs)
    with atomic_output(os.path.join(config.out, "last.keras"), overwrite=True) as tmp:
        model.save(tmp)
    results = model.evaluate(eval_ds, return_dict=True, verbose=0)
    metrics = {"model": config.model, "weights": config.weights, "top1": float(results["accuracy"]),
               "top5": float(results["top5"]), "loss": float(results["loss"])}
    write_json_atomic(os.path.join(config.out, "config.json"), dataclasses.asdict(config))
    write_json_atomic(os.path.join(config.out, "state.json"),
                      {"epochs_done": config.epochs, "finetune": True})
    write_json_atomic(os.path.join(config.out, "metrics.json"), metrics)
    return metrics


def build_parser():
    p = argparse.ArgumentParser(
        description="Fine-tune a pretrained CRA model on a new dataset: a new head on the "
                    "frozen backbone, then everything at a lower learning rate.")
    train_lib.add_train_args(p, FinetuneConfig)
    p.add_argument("--weights", required=True,
                   help="a registered weights name (e.g. imagenet) or a .keras/.weights.h5 file")
    p.add_argument("--stage1-epochs", type=int, default=1)
    p.add_argument("--stage2-lr-factor", type=float, default=0.1)
    p.set_defaults(lr=0.01, epochs=3)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def command():
        config = train_lib.check_milestones(config_from_args(args, FinetuneConfig))
        print_table(f"Fine-tuning result ({config.out})", finetune(config))

    return run(command)


if __name__ == "__main__":
    import sys

    sys.exit(main())
