"""midilm.cli: config.json defaults under HfArgumentParser, and every script's --help."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from transformers import TrainingArguments

from midilm.cli import parse_args
from midilm.training import DataArguments, ModelArguments


@dataclass
class Percent:
    share: float = field(default=0.5, metadata={"help": "Under 1% padding; 100%% sure; default %(default)s."})


def test_help_with_a_bare_percent_sign_prints(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args((Percent,), (), ["--help"])
    assert exit_info.value.code == 0
    assert "Under 1% padding; 100% sure; default 0.5." in " ".join(capsys.readouterr().out.split())


def test_train_help_prints(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args((ModelArguments, DataArguments, TrainingArguments), ("model", "data", "training"), ["--help"])
    assert exit_info.value.code == 0
    assert "--padding_free" in capsys.readouterr().out


def _effective(config_file, argv=()):
    """What prepare_dataset.py and train.py would run with (each parses its own sections)."""
    from midilm.prepare import PrepareArguments
    from midilm.tokenizer import tokenizer_settings
    from midilm.training import TRAINING_DEFAULTS

    prepare_args, config = parse_args((PrepareArguments,), ("prepare",), [], config_file=config_file)
    model_args, data_args, training_args, _ = parse_args(
        (ModelArguments, DataArguments, TrainingArguments),
        ("model", "data", "training"),
        list(argv),
        defaults={**TRAINING_DEFAULTS, "use_cpu": True},
        config_file=config_file,
    )
    return {
        "prepare": vars(prepare_args),
        "model": vars(model_args),
        "data": vars(data_args),
        "training": {k: getattr(training_args, k) for k in TRAINING_DEFAULTS},
        "tokenizer": tokenizer_settings(config.get("tokenizer")),
    }


@pytest.mark.parametrize(
    "content", [None, "", "{}", '{"training": {"max_steps": 2000}, "tokenizer": {"num_velocities": 16}}']
)
def test_config_json_may_be_absent_empty_or_partial(content, tmp_path):
    """The package holds every default: the repository's config.json only repeats them, so without it,
    empty or partial, every script's effective settings are the same."""
    from conftest import REPO

    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert _effective(path) == _effective(REPO / "config.json")


def test_config_json_and_flags_override_the_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"training": {"learning_rate": 0.01}, "tokenizer": {"num_velocities": 8}}')
    effective = _effective(path, ["--max_steps", "7"])
    assert effective["training"]["learning_rate"] == 0.01 and effective["training"]["max_steps"] == 7
    assert effective["tokenizer"]["num_velocities"] == 8 and effective["tokenizer"]["pitch_range"] == [21, 109]


def test_import_midilm_is_light_and_names_the_public_api():
    """`import midilm` (and the `midilm` command's module, which the data step's spawned workers import
    first) loads no torch, transformers or datasets; each public name then resolves to its module's."""
    import subprocess
    import sys

    code = "import sys, midilm, midilm.commands; print(sorted(m for m in ('torch', 'transformers', 'datasets', 'miditok') if m in sys.modules))"
    assert (
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip() == "[]"
    )
    import midilm
    from midilm.evaluate_modules import path
    from midilm.generation import prepare_generation
    from midilm.sampling import SamplingSettings

    assert (
        midilm.prepare_generation is prepare_generation
        and midilm.SamplingSettings is SamplingSettings
        and midilm.evaluate_module_path is path
    )
    assert all(getattr(midilm, name) is not None for name in midilm.__all__)
    with pytest.raises(AttributeError):
        _ = midilm.no_such_name


@pytest.mark.parametrize(
    "argv, code, stream, expected",
    [
        ([], 2, "err", "usage: midilm {prepare,train,generate,evaluate,app,tune}"),
        (["--help"], 0, "out", "usage: midilm {prepare,train,generate,evaluate,app,tune}"),
        (
            ["trian"],
            2,
            "err",
            "error: midilm: no command 'trian'; choose one of prepare, train, generate, evaluate, app, tune",
        ),
        (["generate", "--model_dir", "/nonexistent/model"], 2, "err", "error: --model_dir /nonexistent/model"),
    ],
)
def test_midilm_command_picks_a_step_or_says_why_not(argv, code, stream, expected, capsys, monkeypatch):
    from midilm.commands import main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() names the program in sys.argv[0]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == code
    assert getattr(capsys.readouterr(), stream).startswith(expected)
