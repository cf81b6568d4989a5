"""midilm.cli: config.json defaults under HfArgumentParser, and every script's --help."""

from __future__ import annotations

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
