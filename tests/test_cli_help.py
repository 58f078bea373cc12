"""Every option of every `rmtkd-tf` command says what it does in `--help`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402
import pytest  # noqa: E402

from cli.main import cli  # noqa: E402


def commands():
    return sorted(cli.commands.items())


@pytest.mark.parametrize("name,command", commands(), ids=[name for name, _ in commands()])
def test_every_option_has_help(name, command):
    missing = [
        "/".join(param.opts) for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == [], f"{name}: options without help: {missing}"


def test_calibration_samples_help_says_how_it_relates_to_the_fraction():
    (option,) = [p for p in cli.commands["compress"].params if p.name == "calibration_samples"]
    assert "--calibration-fraction" in option.help
