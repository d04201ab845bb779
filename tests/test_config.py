"""The typed config: defaults, validation, JSON, and the CLI generated from it."""

import dataclasses
import json

import pytest

from mnist_vae.cli import build_parser, config_from_args
from mnist_vae.config import Config
from mnist_vae.flags import field_docs
from mnist_vae.errors import UserError


def test_defaults_are_the_seed_recipe():
    c = Config().validate()
    assert (c.dataset, c.latent_dim, c.epochs, c.batch_size, c.learning_rate, c.seed, c.jit_compile) == (
        "mnist", 2, 30, 128, 2e-3, 0, False)
    assert (c.architecture, c.lr_schedule, c.lr_warmup) == ("conv", "cosine", 0)
    # The layout and recipe the seed started from, by name: the keras-io example's.
    old = config_from_args(build_parser().parse_args(["train", "--preset", "keras_io"]))
    assert (old.architecture, old.learning_rate, old.lr_schedule) == ("keras_io", 1e-3, "constant")
    assert c.validation_size == 5000 and c.limit is None


def test_an_unknown_or_mistyped_architecture_in_a_config_is_refused():
    with pytest.raises(UserError, match="field architecture must be one of"):
        Config.from_dict({"architecture": "seed"})  # a preset's name, not an architecture's
    with pytest.raises(UserError, match="field architecture must be one of"):
        Config.from_dict({"architecture": "seeds"})
    with pytest.raises(UserError, match="field architecture must be str"):
        Config.from_dict({"architecture": ["seed"]})


def test_every_field_has_a_docstring_and_a_flag():
    docs = field_docs(Config)
    names = [f.name for f in dataclasses.fields(Config)]
    assert sorted(docs) == sorted(names) and all(docs.values())
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in names:
        assert "--" + name.replace("_", "-") in help_text


def test_every_commands_options_are_documented_fields():
    """Each command's flags come from a dataclass whose every field has its help written under it."""
    from mnist_vae.commands import COMMANDS, ClassifierTrainOptions

    for options in [*COMMANDS.values(), ClassifierTrainOptions]:
        docs = field_docs(options)
        assert sorted(docs) == sorted(f.name for f in dataclasses.fields(options)) and all(docs.values()), options
        assert options.__doc__, options


def test_json_round_trip(tmp_path):
    c = Config(latent_dim=8, limit=100, dataset="fashion_mnist")
    path = tmp_path / "config.json"
    path.write_text(c.to_json())
    assert Config.load(path) == c


@pytest.mark.parametrize(
    "values, message",
    [
        ({"latent_dim": 0}, "config: field latent_dim must be between 1 and 1,024"),
        ({"epochs": "3"}, "field epochs must be int"),
        ({"learning_rate": 5.0}, "field learning_rate must be between 0 and 1"),
        ({"dataset": "cifar"}, "field dataset must be one of"),
        ({"limit": True}, "field limit must be int or null"),
        ({"jit_compile": 1}, "field jit_compile must be bool"),
        ({"colour": "red"}, "unknown config field"),
        ({"latent_dims": 3}, "unknown config field.*did you mean 'latent_dim'"),
        ({"architecture": "resnet_ar", "binarize": "dynamic", "pixel_layers": -1}, "field pixel_layers must be between 0"),
        ({"architecture": "resnet", "pixel_layers": 4}, "field pixel_layers sets the causal head.*field architecture resnet has none; drop it"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(UserError, match=message):
        Config.from_dict(values)


def test_bad_config_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON config"):
        Config.load(broken)
    with pytest.raises(UserError, match="config file not found"):
        Config.load(tmp_path / "nope.json")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        Config.load(listed)


def test_flags_override_a_config_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"latent_dim": 4, "epochs": 7}))
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "3", "--jit-compile"])
    c = config_from_args(args)
    assert (c.latent_dim, c.epochs, c.jit_compile, c.batch_size) == (4, 3, True, 128)


def test_nonsense_flag_values_are_one_line_errors_with_exit_status_2(capsys):
    from mnist_vae.cli import UsageError, main

    cases = [
        (["train", "--latent-dim", "two"], "vae train: error: argument --latent-dim: invalid int value: 'two'"),
        (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["train", "--architecture", "seed"], "argument --architecture: invalid choice: 'seed'"),
        (["train", "--bogus"], "vae: error: unrecognized arguments: --bogus"),
        (["train", "a\nb\x1b[2J"], r"unrecognized arguments: a\nb\x1b[2J"),  # control characters escaped
        (["train", "--seed", str(2**32)], "vae train: error: --seed must be between 0 and 4,294,967,295"),
        (["train", "--seed", str(2**64)], "--seed must be between"),
        (["train", "--grid-size", "100000"], "--grid-size must be between 2 and 100"),
        (["train", "--limit", "9" * 5000], "argument --limit: invalid int value"),
        (["fit"], "vae: error: argument {train,plot,evaluate,classifier,serve,export,sweep}: invalid choice: 'fit'"),
        ([], "vae: error: the following arguments are required: {train,plot,evaluate,classifier,serve,export,sweep}"),
    ]
    with pytest.raises(UsageError):  # not SystemExit: main reports it like every other bad input
        build_parser().parse_args(["train", "--latent-dim", "two"])
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "--help" in err or "must be between" in err


def test_presets_set_their_fields_and_flags_override_them():
    c = config_from_args(build_parser().parse_args(["train", "--preset", "literature"]))
    assert (c.binarize, c.architecture, c.latent_dim, c.lr_schedule, c.precision, c.learning_rate) == (
        "dynamic", "resnet_ar", 32, "cosine", "float32", 1e-3)
    assert 32 <= c.latent_dim <= 64
    c = config_from_args(build_parser().parse_args(["train", "--preset", "literature", "--latent-dim", "64",
                                                    "--epochs", "2"]))
    assert (c.latent_dim, c.epochs, c.architecture) == (64, 2, "resnet_ar")
    assert config_from_args(build_parser().parse_args(["train", "--preset", "seed"])) == Config()


def test_preset_and_config_file_together_are_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    args = build_parser().parse_args(["train", "--preset", "seed", "--config", str(path)])
    with pytest.raises(UserError, match="pass one"):
        config_from_args(args)
    args = build_parser().parse_args(["train", "--preset", "literature", "--resume", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="drop --preset"):
        config_from_args(args)


def test_autoregressive_architecture_needs_binary_pixels_and_schedules_are_named():
    with pytest.raises(UserError, match="add --binarize dynamic"):
        Config(architecture="resnet_ar").validate()
    Config(architecture="resnet_ar", binarize="dynamic").validate()
    with pytest.raises(UserError, match="--lr-schedule must be one of"):
        Config(lr_schedule="linear").validate()
    with pytest.raises(UserError, match="--precision must be one of"):
        Config(precision="float16").validate()
