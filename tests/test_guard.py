"""The musical guard: exact masks against a base-token oracle, a planted cluster stopped, no sample of a
random model beyond its bounds, and bounds learnt from a prepared dataset and carried in config.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOKENIZER_SETTINGS, make_piece
from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessorList

from midilm.core.modeling import build_config
from midilm.core.tokenizer import build_tokenizer, encode_ids, vocab_base_tokens
from midilm.sampling.grammar import count_syntax_errors
from midilm.sampling.grammar_processor import GrammarLogitsProcessor
from midilm.sampling.guard import (
    NoteGuard,
    NoteGuardLogitsProcessor,
    bounds_from_config,
    bounds_to_config,
    guard_processor,
    learn_bounds,
    load_bounds,
    onset_counts,
)

CAPS = {"max_notes_per_onset": 2, "max_notes_per_bar": 7}


@pytest.fixture(scope="module", params=["base", "bpe"])
def tokenizer_and_map(request, tmp_path_factory):
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, ["bach", "mozart"])
    if request.param == "bpe":
        folder = tmp_path_factory.mktemp("guard_midi")
        for seed in range(6):
            make_piece(seed, bars=8, tracks=3).dump_midi(folder / f"{seed}.mid")
        tokenizer.train(vocab_size=len(tokenizer) + 300, model="BPE", files_paths=sorted(folder.glob("*.mid")))
    return tokenizer, composer_map


def oracle_allowed(tokenizer, prefix: list[int], caps: dict) -> np.ndarray:
    """Which items keep the notes per onset and per bar within `caps`, read token by token from the base
    tokens of prefix + item, the grammar's demand included (after Program a note must follow; in a full
    bar an onset, Position, may not open)."""
    base = vocab_base_tokens(tokenizer)
    specials = set(tokenizer.special_tokens)

    def counts(tokens: list[str]) -> tuple[list[int], list[int], int, int]:
        onsets, bars, onset, bar = [], [], 0, 0
        for t in tokens:
            kind = "Bar" if t in specials else t.partition("_")[0]
            if kind in ("Bar", "Position"):
                onsets.append(onset)
                onset = 0
            if kind == "Bar":
                bars.append(bar)
                bar = 0
            if kind in ("Pitch", "PitchDrum"):
                onset, bar = onset + 1, bar + 1
        return onsets, bars, onset, bar

    prefix_tokens = [t for i in prefix for t in base[i]]
    out = np.zeros(len(base), dtype=bool)
    for v, item in enumerate(base):
        onsets, bars, onset, bar = counts(prefix_tokens + item)
        last = item[-1].partition("_")[0] if item and item[-1] not in specials else None
        onset += last == "Program"
        bar += last in ("Program", "Position")
        out[v] = max(onsets + [onset]) <= caps["max_notes_per_onset"] and max(bars + [bar]) <= caps["max_notes_per_bar"]
    return out


def test_masks_match_the_oracle_on_real_prefixes(tokenizer_and_map):
    tokenizer, composer_map = tokenizer_and_map
    # bounds at the piece's own maxima: its prefixes reach them (a prefix beyond them is another question)
    ids = [
        tokenizer["BOS_None"],
        composer_map.token_ids[0],
        *encode_ids(tokenizer, make_piece(7, bars=2, tracks=3)).tolist(),
    ]
    onset, bar = onset_counts(tokenizer, ids)
    caps = {"max_notes_per_onset": onset, "max_notes_per_bar": bar}
    processor = NoteGuardLogitsProcessor(tokenizer, caps)
    row = torch.tensor([ids])
    masked = 0
    for i in range(2, len(ids)):  # one generate()-like call per token: the incremental path
        scores = processor(row[:, :i], torch.zeros(1, len(tokenizer)))
        expected = oracle_allowed(tokenizer, ids[:i], caps)
        assert np.array_equal(torch.isfinite(scores[0]).numpy(), expected), f"prefix of {i} tokens"
        assert expected[ids[i]]  # the real continuation stays allowed
        masked += int((~expected).sum())
    assert masked > 10 * len(ids)


def test_a_planted_cluster_is_stopped(tokenizer_and_map):
    tokenizer, composer_map = tokenizer_and_map
    base = vocab_base_tokens(tokenizer)
    note = lambda pitch: ["Program_0", f"Pitch_{pitch}", "Velocity_63", "Duration_1.0.8"]  # noqa: E731
    tokens = ["Bar_None", "TimeSig_4/4", "Position_0", *note(60), *note(64)]  # two notes: the onset is full
    prefix = [tokenizer["BOS_None"], composer_map.token_ids[0], *(tokenizer[t] for t in tokens)]
    guard = NoteGuard.from_bounds(tokenizer, CAPS)
    allowed = guard.allowed(guard.parse(torch.tensor([prefix])))[0].numpy()
    for v, item in enumerate(base):
        before_onset = []
        for t in item:
            if t.startswith(("Position_", "Bar_")):
                break
            before_onset.append(t)
        adds = any(t.startswith("Pitch") for t in before_onset) or (
            bool(before_onset) and before_onset[-1].startswith("Program")
        )
        if adds:
            assert not allowed[v], f"{item} adds a note to the full onset"
    assert allowed[tokenizer["Position_8"]] and allowed[tokenizer["Bar_None"]] and allowed[tokenizer["EOS_None"]]
    assert np.array_equal(allowed, oracle_allowed(tokenizer, prefix, CAPS))
    # the same prefix with room left: a third note may come (one Program-Pitch item at least)
    roomy = NoteGuard(tokenizer, 3, 7)
    assert roomy.allowed(roomy.parse(torch.tensor([prefix])))[0, tokenizer["Program_0"]]


def test_sampling_with_the_guard_never_passes_its_bounds(tokenizer_and_map):
    tokenizer, composer_map = tokenizer_and_map
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_config("llama", "tiny", tokenizer, composer_map, 512)).eval()
    starts = torch.tensor([[tokenizer["BOS_None"], composer_map.token_ids[r % 2]] for r in range(6)])

    def sample(processors: list) -> list[list[int]]:
        torch.manual_seed(1)
        with torch.no_grad():
            out = model.generate(
                starts,
                do_sample=True,
                max_new_tokens=160,
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=model.config.pad_token_id,
                eos_token_id=model.config.eos_token_id,
            )
        return out.tolist()

    guarded = sample([GrammarLogitsProcessor(tokenizer), NoteGuardLogitsProcessor(tokenizer, CAPS)])
    unguarded = sample([GrammarLogitsProcessor(tokenizer)])
    for ids in guarded:
        onset, bar = onset_counts(tokenizer, ids)
        assert onset <= CAPS["max_notes_per_onset"] and bar <= CAPS["max_notes_per_bar"]
        assert count_syntax_errors(tokenizer, ids) == 0
    assert sum(onset_counts(tokenizer, ids)[0] for ids in guarded) > len(guarded)  # it still writes chords
    # the same random model without the guard does pile notes up: the bound above is a real constraint
    assert max(onset_counts(tokenizer, ids)[0] for ids in unguarded) > CAPS["max_notes_per_onset"]


def test_learn_bounds_from_a_prepared_dataset(prepared, tmp_path):
    from datasets import load_from_disk

    from midilm.core.tokenizer import load_tokenizer
    from midilm.evaluation.composer_classifier.pieces import scores_from_ids

    tokenizer, composer_map = load_tokenizer(prepared["tokenizer"])
    train = load_from_disk(str(prepared["data"]))["train"]
    bounds = learn_bounds(train, tokenizer, quantile=1.0, batch_size=7)
    # the maximum, counted from the decoded scores of the same rows
    rows = train.filter(lambda r: r["augmentation"] == "" and r["task"] == "continuation")
    most = 0
    for score in scores_from_ids(tokenizer, rows["input_ids"]):
        starts = np.concatenate([t.notes.numpy()["time"] for t in score.tracks])
        most = max(most, int(np.unique(starts, return_counts=True)[1].max()))
    assert bounds["max_notes_per_onset"] == bounds["observed_max_notes_per_onset"] == most
    assert bounds["max_notes_per_bar"] >= most and bounds["onsets"] > 0
    lower = learn_bounds(train, tokenizer, quantile=0.5)
    assert lower["max_notes_per_onset"] <= bounds["max_notes_per_onset"]

    config = build_config("llama", "tiny", tokenizer, composer_map, 256)
    bounds_to_config(config, bounds)
    config.save_pretrained(tmp_path)
    assert load_bounds(tmp_path) == bounds
    assert bounds_from_config(AutoConfig.from_pretrained(tmp_path)) == bounds
    assert guard_processor(tokenizer, AutoConfig.from_pretrained(tmp_path)).guard.max_notes_per_onset == most
    assert guard_processor(tokenizer, build_config("llama", "tiny", tokenizer, composer_map, 256)) is None
    assert json.loads(Path(tmp_path, "config.json").read_text())["midilm_guard"]["quantile"] == 1.0
    assert load_bounds(tmp_path / "missing") is None
