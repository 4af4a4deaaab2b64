"""The settings every training command shares: declared once in keras_cra.training.config."""

import dataclasses

import pytest

from keras_cra.errors import UsageError
from keras_cra.training import ablate, detect, finetune, run_folder, train
from keras_cra.training.config import CHOICES, RunConfig, given_flags, validate_run


@pytest.mark.parametrize("module, config_class, required", [
    (train, train.TrainConfig, []), (detect, detect.DetectConfig, []),
    (finetune, finetune.FinetuneConfig, ["--weights", "w.keras"])])
def test_each_command_takes_its_run_settings_from_its_config_class(module, config_class,
                                                                   required):
    parsed = vars(module.build_parser().parse_args(required))
    for field in dataclasses.fields(RunConfig):
        if field.name in ("verbose",):  # None: a progress bar in a terminal, else a line
            assert parsed[field.name] is None
            continue
        default = next(f.default for f in dataclasses.fields(config_class) if f.name == field.name)
        if module is finetune and field.name in ("lr", "epochs", "resume"):
            continue  # fine-tuning's own defaults (set_defaults); it does not resume
        assert parsed[field.name] == default, field.name


def test_choices_are_declared_once():
    parser = train.build_parser()
    for name, allowed in CHOICES.items():
        default = train.TrainConfig.__dataclass_fields__[name].default
        value = 2 if name == "verbose" else next(
            v for v in allowed if v is not None and v != default)
        argv = [f"--{name.replace('_', '-')}", str(value)]
        assert getattr(parser.parse_args(argv), name) == value
        with pytest.raises(SystemExit):
            parser.parse_args([f"--{name.replace('_', '-')}", "bogus"])
        bad = dataclasses.replace(train.TrainConfig(), **{name: "bogus"})
        with pytest.raises(UsageError, match=rf"^{name} must be one of"):
            validate_run(bad)


def test_given_flags_are_what_argv_names():
    parser = train.build_parser()
    assert given_flags(parser, []) == set()
    assert given_flags(parser, ["--lr", "0.1", "--resume", "--milestones", "3"]) == {
        "lr", "resume", "milestones"}
    # A flag given with its default value is still given (so --resume compares it).
    assert given_flags(parser, ["--seed", "0"]) == {"seed"}
    assert given_flags(detect.build_parser(), ["--quick"]) == {"quick"}
    assert given_flags(ablate.build_parser(), ["--attention", "none,cra"]) == {"attention"}


def test_datasets_returns_the_image_size_it_decides(tfds_dir):
    config = train.TrainConfig(train_split="train[:64]", eval_split="test[:32]", epochs=1,
                               batch_size=32, data_dir=tfds_dir).resolved()
    assert config.image_size is None
    data = train.datasets(config)
    assert data.image_size == 28 and config.image_size is None  # not changed
    assert next(iter(data.train))[0].shape == (32, 28, 28, 3)


def test_run_folder_names_are_public():
    assert {"config.json", "last.keras", run_folder.LOCK_FILE} <= run_folder.RUN_FILES
    assert run_folder.json_value((1, 2)) == [1, 2]
    from keras_cra.errors import naming_flags

    assert run_folder.resume_differences(
        train.TrainConfig(lr=0.5, out="x"), {"lr": 0.1, "out": "y"}) == [
        "lr 0.5 (the run has 0.1)"]
    with naming_flags():
        assert run_folder.resume_differences(
            train.TrainConfig(lr=0.5, out="x"), {"lr": 0.1, "out": "y"}) == [
            "--lr 0.5 (the run has 0.1)"]


def test_library_errors_name_arguments_and_commands_name_flags():
    from keras_cra.errors import naming_flags

    config = train.TrainConfig(lr=-1.0, out="x").resolved()
    with pytest.raises(UsageError, match=r"^lr must be > 0\. Received: lr=-1\.0$"):
        train.validate(config)
    with naming_flags(), pytest.raises(UsageError,
                                       match=r"^--lr must be > 0\. Received: --lr -1\.0$"):
        train.validate(config)
    with pytest.raises(UsageError, match=r"^image_size must be a multiple of 32, >= 64\. "
                                         r"Received: image_size=70$"):
        detect.validate(detect.DetectConfig(image_size=70).resolved())
