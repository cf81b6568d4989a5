"""Pieces longer than the context: generate.py and midilm.sampling.generation write them in windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOKENIZER_SETTINGS, load_script, make_piece, run_cli, save_random_model
from transformers import AutoModelForCausalLM

from midilm.core.rows import HEADER_TOKENS
from midilm.core.tokenizer import bar_start_table, build_tokenizer, load_tokenizer
from midilm.sampling.generation import load_prompt, prepare_generation
from midilm.sampling.grammar import RemiGrammar, count_syntax_errors
from midilm.sampling.guard import CONFIG_KEY, NoteGuard
from midilm.sampling.settings import SamplingSettings
from midilm.sampling.windows import window_start

CONTEXT = 128
LONG = 4 * CONTEXT  # new tokens asked: four contexts' worth


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny Llama with a 128-token context and guard bounds (so the guard runs in every window)."""
    root = tmp_path_factory.mktemp("long_midi")
    paths = []
    for seed in range(3):
        paths.append(root / f"piece{seed}.mid")
        make_piece(200 + seed, bars=8).dump_midi(paths[-1])
    out = tmp_path_factory.mktemp("long_model") / "model_output"
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["bach", "mozart"])
    tokenizer.train(vocab_size=len(tokenizer) + 60, files_paths=paths)
    guard = {"max_notes_per_onset": 3, "max_notes_per_bar": 12, "quantile": 0.999}
    return save_random_model(out, tokenizer, composer_map, CONTEXT, **{CONFIG_KEY: guard})


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def script():
    return load_script("generate.py")


def grammar_state(grammar: RemiGrammar, ids: list[int]) -> tuple:
    rows = grammar.parse(torch.tensor([ids]))
    return int(rows.state[0]), int(rows.program[0]), rows.notes[0].nonzero().flatten().tolist()


def test_a_long_sample_crosses_windows_with_the_same_tokens_for_the_same_seed(model_dir, model):
    tokenizer, _ = load_tokenizer(model_dir)
    runs = []
    for _ in range(2):
        plan = prepare_generation(
            model_dir,
            "bach,mozart",
            1,
            settings=SamplingSettings(max_new_tokens=LONG, min_new_tokens=LONG, seed=3, guidance_scale=1.0),
        )
        runs.append((plan, plan.sample_ids(plan.run(model))))
    (plan, ids), (again, ids_again) = runs
    assert ids == ids_again and again.windows == plan.windows
    assert plan.windows >= 4  # each window writes at most a context less the bars it reads again
    starts_bar = np.asarray(bar_start_table(tokenizer))
    grammar, guard = (
        RemiGrammar.for_tokenizer(tokenizer),
        NoteGuard.from_bounds(tokenizer, {"max_notes_per_onset": 3, "max_notes_per_bar": 12}),
    )
    for row in ids:
        assert plan.new_tokens(row) == LONG
        assert count_syntax_errors(tokenizer, row) == 0.0
        # What the grammar and the guard derive from a window (header + latest bars) is what they derive from the whole
        # row.
        music = row[HEADER_TOKENS:]
        start = window_start(music, starts_bar, CONTEXT // 2)
        assert start > 0 and starts_bar[music[start]]
        window = row[:HEADER_TOKENS] + music[start:]
        assert grammar_state(grammar, window) == grammar_state(grammar, row)
        assert guard.parse(torch.tensor([window])).tolist() == guard.parse(torch.tensor([row])).tolist()


def test_cli_long_sample_with_guidance_records_its_windows_and_repeats_its_bytes(
    script, model_dir, tmp_path, monkeypatch
):
    args = [
        "--model_dir",
        str(model_dir),
        "--composer",
        "bach",
        "--num_samples",
        "2",
        "--max_new_tokens",
        str(LONG),
        "--min_new_tokens",
        str(LONG),
        "--guidance_scale",
        "3",
        "--seed",
        "5",
    ]
    for name in ("a", "b"):
        assert run_cli(script, monkeypatch, *args, "--output_dir", str(tmp_path / name)) == 0
    for i in range(2):
        record = json.loads((tmp_path / "a" / f"bach_{i}.json").read_text())
        assert record["settings"]["effective_guidance_scale"] == 3.0 and record["settings"]["max_new_tokens"] == LONG
        assert record["windows"] >= 4 and record["new_tokens"] == LONG and record["syntax_error_rate"] == 0.0
        assert (tmp_path / "a" / f"bach_{i}.mid").read_bytes() == (tmp_path / "b" / f"bach_{i}.mid").read_bytes()


def test_cli_long_continuation_keeps_the_whole_prompt(script, model_dir, tmp_path, monkeypatch):
    prompt_path = tmp_path / "theme.mid"
    make_piece(9, bars=12).dump_midi(prompt_path)
    tokenizer, composer_map = load_tokenizer(model_dir)
    prompt = load_prompt(tokenizer, prompt_path)
    assert len(prompt) > CONTEXT  # the prompt alone overflows the context: the first window reads its last bars
    out = tmp_path / "samples"
    assert (
        run_cli(
            script,
            monkeypatch,
            "--model_dir",
            str(model_dir),
            "--composer",
            "mozart",
            "--prompt_midi",
            str(prompt_path),
            "--max_new_tokens",
            str(2 * CONTEXT),
            "--min_new_tokens",
            str(2 * CONTEXT),
            "--output_dir",
            str(out),
        )
        == 0
    )
    record = json.loads((out / "mozart_0.json").read_text())
    assert record["prompt_tokens"] == len(prompt) and record["windows"] >= 2
    assert record["tokens"][: HEADER_TOKENS + len(prompt)] == [
        tokenizer["BOS_None"],
        composer_map.id_of("mozart"),
        *prompt,
    ]
    assert record["new_tokens"] == 2 * CONTEXT and record["syntax_error_rate"] == 0.0


def test_within_the_context_is_still_one_call(model_dir, model):
    plan = prepare_generation(
        model_dir, "bach", 1, settings=SamplingSettings(max_new_tokens=CONTEXT - HEADER_TOKENS, seed=1)
    )
    assert plan.windowed is None
    plan.run(model)
    assert plan.windows == 1


def test_static_cache_and_compile_give_the_same_long_sample(model_dir):
    """Each window is its own generate() call with the plan's static cache and compile settings: the same
    tokens as plain windows. Compiled with aot_eager (a few seconds; inductor: see test_generation)."""
    from torch._dynamo.utils import counters

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # its own copy: the compiled call stays on it
    samples, speed = [], {"plain": {}, "static": {"static_cache": True}}
    speed["compiled"] = {"compile": True, "compile_backend": "aot_eager"}
    for name, flags in speed.items():
        plan = prepare_generation(
            model_dir,
            "bach",
            1,
            settings=SamplingSettings(**flags, max_new_tokens=2 * CONTEXT, min_new_tokens=2 * CONTEXT, seed=7),
        )
        counters.clear()
        samples.append(plan.sample_ids(plan.run(model)))
        assert plan.windows >= 2 and plan.settings["static_cache"] is (name != "plain")
        assert (counters["stats"]["unique_graphs"] > 0) is (name == "compiled")
    assert samples[0] == samples[1] == samples[2]
