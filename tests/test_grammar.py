"""The REMI grammar processor: real music passes it, sampling under it gives 0 miditok syntax errors."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch
from conftest import TOKENIZER_SETTINGS as SETTINGS
from symusic import Note, Score, Tempo, TimeSignature, Track
from transformers import AutoModelForCausalLM, LogitsProcessorList

from midilm.core.modeling import build_config
from midilm.core.tokenizer import build_tokenizer, load_tokenizer, save_tokenizer, vocab_base_tokens
from midilm.sampling.grammar import RemiGrammar, count_syntax_errors
from midilm.sampling.grammar_processor import GrammarLogitsProcessor

# (numerator, denominator, bars): exercises bar lengths of 24, 32, 40, 48 and 96 positions
METERS = [(4, 4, 2), (3, 4, 1), (6, 8, 2), (12, 8, 1), (5, 4, 1), (2, 4, 1), (4, 4, 1)]


def meter_piece(seed: int, tpq: int = 480) -> Score:
    """Time signature changes, mid-bar tempo changes, three programs, drums and a unison across two tracks."""
    rng = random.Random(seed)
    score = Score(tpq)
    piano, strings = Track(name="piano", program=0), Track(name="strings", program=48)
    drums = Track(name="drums", is_drum=True)
    left = Track(name="left hand", program=0)  # same program as `piano`: miditok merges them
    start = 0
    for num, den, bars in METERS:
        score.time_signatures.append(TimeSignature(start, num, den))
        bar = tpq * 4 * num // den
        for b in range(bars):
            t0 = start + b * bar
            score.tempos.append(Tempo(t0 + bar // 2, rng.choice([70, 96, 132])))
            for onset in range(0, bar, tpq // 2):
                pitch = rng.randint(60, 84)
                piano.notes.append(Note(t0 + onset, tpq // 2, pitch, rng.randint(50, 110)))
                if rng.random() < 0.3:
                    left.notes.append(Note(t0 + onset, tpq, pitch, 60))  # unison: a duplicate to drop
                drums.notes.append(Note(t0 + onset, tpq // 4, rng.choice([36, 38, 42]), 90))
            strings.notes.append(Note(t0, bar, rng.randint(40, 55), 70))
        start += bars * bar
    score.tracks.extend([piano, left, strings, drums])
    return score


@pytest.fixture(scope="module")
def midi_files(bach_files, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("grammar_midi")
    for seed in range(3):
        meter_piece(seed).dump_midi(folder / f"meters{seed}.mid")
    return sorted(folder.glob("*.mid")) + [f.path for f in bach_files[:4]]


@pytest.fixture(scope="module", params=["base", "bpe"])
def tokenizer_and_map(request, midi_files):
    tokenizer, composer_map = build_tokenizer(SETTINGS, ["bach", "mozart"])
    if request.param == "bpe":
        tokenizer.train(vocab_size=len(tokenizer) + 300, model="BPE", files_paths=midi_files)
    return tokenizer, composer_map


@pytest.fixture(scope="module")
def tiny_model(tokenizer_and_map):
    tokenizer, composer_map = tokenizer_and_map
    torch.manual_seed(0)
    config = build_config("llama", "tiny", tokenizer, composer_map, 512)
    return AutoModelForCausalLM.from_config(config).eval()


def encoded(tokenizer, composer_id: int, path: Path) -> list[int]:
    return [tokenizer["BOS_None"], composer_id, *tokenizer.encode(path).ids, tokenizer["EOS_None"]]


def sample(model, prompts: torch.Tensor, processors: list, seed: int, max_new_tokens: int = 200, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(
            prompts,
            do_sample=True,
            max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=model.config.pad_token_id,
            eos_token_id=model.config.eos_token_id,
            **kwargs,
        )


def starts(tokenizer, composer_map, rows: int) -> torch.Tensor:
    composers = composer_map.token_ids + [composer_map.none_id]
    return torch.tensor([[tokenizer["BOS_None"], composers[r % len(composers)]] for r in range(rows)])


def test_real_music_is_never_masked(tokenizer_and_map, midi_files):
    tokenizer, composer_map = tokenizer_and_map
    processor, base = GrammarLogitsProcessor(tokenizer), vocab_base_tokens(tokenizer)
    for path in midi_files:
        ids = encoded(tokenizer, composer_map.token_ids[0], path)
        assert count_syntax_errors(tokenizer, ids) == 0  # miditok agrees the piece is valid
        row = torch.tensor([ids])
        for i in range(2, len(ids)):  # one generate()-like call per token: the incremental path
            scores = processor(row[:, :i], torch.zeros(1, len(tokenizer)))
            assert torch.isfinite(scores[0, ids[i]]), f"{path.name}: item {i} {base[ids[i]]} masked"


def test_rules_on_base_tokens():
    tokenizer, composer_map = build_tokenizer(SETTINGS, ["bach"])
    grammar = RemiGrammar.for_tokenizer(tokenizer)
    prefix = ["Bar_None", "TimeSig_4/4", "Position_4", "Program_0", "Pitch_60", "Velocity_63", "Duration_1.0.8"]

    def allowed(tokens: list[str]) -> set[str]:
        ids = [tokenizer["BOS_None"], composer_map.token_ids[0], *(tokenizer[t] for t in tokens)]
        rows = grammar.parse(torch.tensor([ids]))
        return {tokenizer[i] for i in grammar.allowed(rows)[0].nonzero().flatten().tolist()}

    assert allowed([]) == {"Bar_None"}  # music starts at a bar line; no PAD/BOS/composer/EOS
    assert allowed(["Bar_None"]) == {t for t in tokenizer.vocab if t.startswith("TimeSig_")}
    after_note = allowed(prefix)
    assert "EOS_None" in after_note and "Position_4" not in after_note and "Position_5" in after_note
    assert "Position_31" in after_note and "Position_32" not in after_note  # a 4/4 bar has 32 positions
    assert "Pitch_60" not in allowed(prefix + ["Program_0"])  # the same note twice at one position
    assert "Pitch_60" in allowed(prefix + ["Program_40"])
    assert "Pitch_60" in allowed(prefix + ["Position_8", "Program_0"])
    assert allowed(prefix + ["Program_-1"]) == {t for t in tokenizer.vocab if t.startswith("PitchDrum_")}
    assert "EOS_None" not in allowed(prefix + ["Program_0"])  # EOS only after a complete note
    assert allowed(prefix + ["EOS_None"]) == {"PAD_None", "EOS_None"}
    with pytest.raises(ValueError, match="breaks the REMI grammar"):
        grammar.parse(torch.tensor([[tokenizer["BOS_None"], composer_map.token_ids[0], tokenizer["Position_0"]]]))


def test_sampling_under_the_grammar_has_no_syntax_errors(tokenizer_and_map, tiny_model):
    tokenizer, composer_map = tokenizer_and_map
    grammar = RemiGrammar.for_tokenizer(tokenizer)
    processor = GrammarLogitsProcessor(tokenizer)  # one processor for both calls: each new generate() re-parses
    samples = []
    for seed in range(3):
        samples += sample(tiny_model, starts(tokenizer, composer_map, 8), [processor], seed).tolist()
    for ids in samples:
        assert count_syntax_errors(tokenizer, ids) == 0
        assert grammar.first_violation(ids) is None
        music = ids[2 : ids.index(grammar.eos_id)] if grammar.eos_id in ids else ids[2:]
        assert tokenizer.decode(music).note_num() > 0  # reads back as a score


def test_sampling_without_the_grammar_has_errors(tokenizer_and_map, tiny_model):
    tokenizer, composer_map = tokenizer_and_map
    samples = sample(tiny_model, starts(tokenizer, composer_map, 4), [], seed=0, max_new_tokens=100)
    assert sum(count_syntax_errors(tokenizer, ids) for ids in samples) > 0


def test_prompts_with_music_and_left_padding(tokenizer_and_map, tiny_model, midi_files):
    tokenizer, composer_map = tokenizer_and_map
    piece = encoded(tokenizer, composer_map.token_ids[1], midi_files[0])
    long, short = piece[:41], piece[:23]  # both cut mid-bar, wherever the count falls
    pad = tokenizer.pad_token_id
    prompts = torch.tensor([long, [pad] * (len(long) - len(short)) + short])
    attention = (prompts != pad).long()
    processors = [GrammarLogitsProcessor(tokenizer)]
    out = sample(tiny_model, prompts, processors, seed=3, max_new_tokens=120, attention_mask=attention)
    assert out[:, : len(long)].tolist() == prompts.tolist()
    for ids in out.tolist():
        assert count_syntax_errors(tokenizer, ids) == 0


def test_cfg_pairs_get_the_same_mask(tokenizer_and_map, midi_files):
    tokenizer, composer_map = tokenizer_and_map
    music = encoded(tokenizer, composer_map.token_ids[0], midi_files[1])[2:30]
    cond = [[tokenizer["BOS_None"], c, *music] for c in composer_map.token_ids]
    uncond = [[tokenizer["BOS_None"], composer_map.none_id, *music] for _ in composer_map.token_ids]
    scores = GrammarLogitsProcessor(tokenizer)(torch.tensor(cond + uncond), torch.zeros(4, len(tokenizer)))
    half = len(cond)
    assert torch.equal(scores[:half], scores[half:]) and torch.isinf(scores).any()


def test_grammar_is_built_once_per_tokenizer(tokenizer_and_map, tmp_path):
    tokenizer, composer_map = tokenizer_and_map
    first = RemiGrammar.for_tokenizer(tokenizer)
    save_tokenizer(tokenizer, composer_map, tmp_path)
    reloaded, _ = load_tokenizer(tmp_path)
    began = time.perf_counter()
    assert RemiGrammar.for_tokenizer(reloaded) is first  # keyed by content, not by object
    assert time.perf_counter() - began < 0.2
