"""midilm.core.cli: config.json defaults under HfArgumentParser, and every script's --help."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import pytest
from transformers import TrainingArguments

from midilm.core.cli import parse_args
from midilm.training.arguments import DataArguments, ModelArguments


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
    from midilm.core.tokenizer import tokenizer_settings
    from midilm.data.arguments import PrepareArguments
    from midilm.training.arguments import TRAINING_DEFAULTS

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
    """The package holds every default and the repository's config.json overrides none of them, so without
    it, empty or partial (repeating defaults), every script's effective settings are the same."""
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


def _package_defaults(section: str) -> dict:
    """The defaults a config file's section overrides: the fields of the dataclasses its command parses,
    with the package constants for classes midilm does not own (TRAINING_DEFAULTS, TOKENIZER_DEFAULTS) over them."""
    from dataclasses import MISSING, fields

    if section == "tokenizer":
        from midilm.core.tokenizer import TOKENIZER_DEFAULTS

        return dict(TOKENIZER_DEFAULTS)
    if section == "prepare":
        from midilm.data.arguments import PrepareArguments as classes
    elif section in ("model", "data", "finetune", "training"):
        from midilm.training.finetune import FinetuneArguments

        classes = (ModelArguments, DataArguments, FinetuneArguments, TrainingArguments)
    elif section == "generate":
        from midilm.commands.generate import GenerateArguments
        from midilm.sampling.settings import SamplingSettings

        classes = (GenerateArguments, SamplingSettings)
    elif section == "evaluate":
        from midilm.evaluation.arguments import EvaluateArguments as classes
    elif section == "tune":
        from midilm.tuning.arguments import TuneArguments
        from midilm.tuning.score import ScoreWeights

        classes = (TuneArguments, ScoreWeights)
    elif section == "app":
        from midilm.app import AppArguments as classes
    else:
        raise AssertionError(f"config.json section {section!r} is read by no command")
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory()
        for cls in (classes if isinstance(classes, tuple) else (classes,))
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
    if section == "training":
        from midilm.training.arguments import TRAINING_DEFAULTS

        defaults.update(TRAINING_DEFAULTS)
    return defaults


def repeated_defaults(config: dict) -> list[str]:
    """`section.key` of every override in a config file that only repeats the package default (which
    would mask a later change of that default), and of every override without its reason in `_reasons`."""
    reasons = config.get("_reasons", {})
    problems = []
    for section, values in config.items():
        if section.startswith("_"):  # `_comment`, `_reasons`: for readers, read by no command
            continue
        defaults = _package_defaults(section)
        for key, value in values.items():
            if key in defaults and value == defaults[key]:
                problems.append(f"{section}.{key} repeats the default {value!r}")
            elif f"{section}.{key}" not in reasons:
                problems.append(f"{section}.{key} has no reason in _reasons")
    return problems


def test_config_json_holds_only_deliberate_overrides():
    """Each default lives once, in the package: the repository's config.json may only change one, and says why."""
    import json

    from conftest import REPO

    assert repeated_defaults(json.loads((REPO / "config.json").read_text())) == []


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("prepare", "vocab_size", 1000),
        ("tokenizer", "pitch_range", [21, 109]),
        ("model", "model_preset", "tiny"),
        ("data", "composer_dropout", 0.15),
        ("training", "learning_rate", 0.001),  # TRAINING_DEFAULTS, over TrainingArguments' own 5e-5
        ("training", "adam_beta1", 0.9),  # TrainingArguments' own default
        ("generate", "num_samples", 1),
        ("evaluate", "output_dir", "eval_report"),
        ("tune", "dpo_epochs", 2.0),
        ("app", "model_dir", "model_output"),
    ],
)
def test_a_repeated_default_or_an_unexplained_override_is_caught(section, key, value):
    assert repeated_defaults({section: {key: value}}) == [f"{section}.{key} repeats the default {value!r}"]
    changed = [value] if not isinstance(value, (int, float)) else value * 2
    assert repeated_defaults({section: {key: changed}}) == [f"{section}.{key} has no reason in _reasons"]
    assert repeated_defaults({section: {key: changed}, "_reasons": {f"{section}.{key}": "why"}}) == []


def test_import_midilm_is_light_and_names_the_public_api():
    """`import midilm` (and the `midilm` command's module, which the data step's spawned workers import
    first) loads no torch, transformers or datasets; each public name then resolves to its module's."""
    import subprocess
    import sys

    code = (
        "import sys, midilm, midilm.commands; print(sorted(m for m in ('torch', 'transformers', 'datasets', "
        "'miditok') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip() == "[]"
    )
    import midilm
    from midilm.evaluate_modules import path
    from midilm.sampling.generation import prepare_generation
    from midilm.sampling.settings import SamplingSettings

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
