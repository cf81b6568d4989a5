"""Composer names as people write them, end to end: prepare, train a few steps, generate by name."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import load_script, run_cli

from midilm.core.tokenizer import composer_token
from midilm.sampling.sample_files import sample_stem


@pytest.fixture(scope="module")
def named_model(named_prepared, tmp_path_factory):
    """train.py's main() on the named corpus: the tiny preset, 4 steps, one evaluation at the end with
    one short sample per composer (the callback's file names)."""
    out = tmp_path_factory.mktemp("named_train") / "model"
    argv = [
        "--dataset_dir",
        str(named_prepared["data"]),
        "--tokenizer_dir",
        str(named_prepared["tokenizer"]),
        "--output_dir",
        str(out),
        "--model_preset",
        "tiny",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "2",
        "--logging_steps",
        "2",
        "--dataloader_num_workers",
        "0",
        "--eval_strategy",
        "steps",
        "--eval_steps",
        "4",
        "--load_best_model_at_end",
        "false",
        "--save_strategy",
        "no",
        "--samples_per_composer",
        "1",
        "--sample_max_new_tokens",
        "8",
        "--report_to",
        "none",
    ]
    with pytest.MonkeyPatch.context() as patch:
        assert run_cli(load_script("train.py"), patch, *argv) == 0
    return out


def test_prepare_keeps_every_name_with_its_own_token(named_prepared):
    names = named_prepared["names"]
    composers = {c["composer"]: c for c in named_prepared["report"]["composers"]["composers"]}
    assert set(names) <= set(composers)
    tokens = [composers[name]["token"] for name in names]
    assert len(set(tokens)) == len(names)  # no two names share a token
    assert all("_" not in t.removeprefix("COMPOSER_") for t in tokens)  # miditok rewrites tokens with more underscores
    saved = json.loads((named_prepared["tokenizer"] / "composers.json").read_text())
    assert {c["composer"] for c in saved["composers"]} >= set(names)


@pytest.mark.parametrize("asked", ["Bach, Johann Sebastian", composer_token("Bach, Johann Sebastian"), "чайковский"])
def test_generate_by_name_or_token_writes_the_users_name(named_model, tmp_path, monkeypatch, asked):
    expected = "Чайковский" if asked == "чайковский" else "Bach, Johann Sebastian"
    out = tmp_path / "samples"
    argv = [
        "--model_dir",
        str(named_model),
        "--composer",
        asked,
        "--num_samples",
        "1",
        "--max_new_tokens",
        "16",
        "--output_dir",
        str(out),
        "--seed",
        "3",
    ]
    assert run_cli(load_script("generate.py"), monkeypatch, *argv) == 0
    stem = sample_stem(expected, 0)
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.json", f"{stem}.mid"]
    assert json.loads((out / f"{stem}.json").read_text())["composer"] == expected


def test_model_card_command_names_the_composer_as_one_argument(named_model, named_prepared):
    card = (named_model / "README.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("python generate.py") and "--composer" in line)
    words = shlex.split(line, comments=True)
    assert words[words.index("--composer") + 1] == sorted(named_prepared["names"])[0]  # the card's first composer


def test_training_samples_are_named_as_generate_names_them(named_model, named_prepared):
    written = sorted(p.name for p in (named_model / "samples" / "step-4").glob("*.mid"))
    assert written == sorted(f"{sample_stem(name, 0)}.mid" for name in named_prepared["names"])
