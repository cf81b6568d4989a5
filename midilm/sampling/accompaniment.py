"""Accompaniment: a melody in, the full piece around it out.

    from midilm.sampling.accompaniment import harmonize

    settings = SamplingSettings(seed=0)
    for i, result in enumerate(harmonize("model_output", "melody.mid", "bach", 2, settings=settings)):
        result.score.dump_midi(f"harmonized_{i}.mid")  # the melody, unchanged, on its own track + the new parts

A model trained on `prepare_dataset.py --tasks accompaniment` rows has read
`[BOS, COMPOSER, MELODY, melody bars k..j, FULL, the full piece's bars k..j, EOS]` (midilm.core.rows). Here the
prompt is that sequence up to FULL, and `generate()` writes the full section under three processors: the REMI
grammar, `BarLimitLogitsProcessor` (as many bars as the melody, each with the melody's time
signature; then the next bar line becomes EOS) and our CFG sampler, whose unconditional rows swap
the composer token only and keep the melody.

A melody whose two sections do not fit the model's context is generated in windows: each window
holds the melody bars a..b and, in its full section, the bars a..c already written (up to half the
context) as context, and writes bars c..b; the bar count per window comes from the tokens the full
bars took so far. If the context runs out inside a bar, that bar is written again by the next window.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from symusic import Score, Track
from transformers import LogitsProcessorList

from midilm.core.errors import InputError
from midilm.core.melody import extract_melody
from midilm.core.midi_checks import require_usable_midi
from midilm.core.modeling import context_length, load_midilm_dir, model_tasks, sampling_defaults
from midilm.core.rows import OVERHEAD, RowLayout
from midilm.core.tokenizer import NONE, ComposerMap, bar_start_table, encode_ids, vocab_base_tokens
from midilm.data.dataset import empty_bar, split_bars
from midilm.metrics.accompaniment import DEFAULT_ONSET_TOLERANCE, accompaniment_metrics, onset_pitch_matches
from midilm.sampling.bars import BarLimitLogitsProcessor, bar_time_signatures
from midilm.sampling.generation import (
    composer_ids_of,
    decode_ids,
    guard_bounds,
    load_model,
    model_settings,
    sample_composers,
)
from midilm.sampling.grammar import RemiGrammar, count_syntax_errors
from midilm.sampling.grammar_processor import GrammarLogitsProcessor
from midilm.sampling.guard import guard_processor
from midilm.sampling.plan import SamplingPlan
from midilm.sampling.settings import SamplingSettings, greedy_config
from midilm.sampling.windows import left_padded

ROW_OVERHEAD = OVERHEAD["accompaniment"]

PAST_SHARE = 0.5  # of the context, at most, for the bars already written that a window reads again

FULL_PER_MELODY_TOKEN = 4.0  # first guess of a full bar's tokens per melody token (a four-voice texture)


@dataclass
class MelodyPrompt:
    """A melody ready to accompany."""

    melody: Score  # the given melody, unchanged (its top voice if it had chords): the output's melody track
    bars: list[np.ndarray]  # its tokens, one array per bar, from bar 0 to its last note's bar
    time_signatures: list[int]  # index (in `time_signature_table`) of each bar's time signature, -1 where none
    source: str  # where the melody came from: 'track "Soprano"', 'top voice of 2 tracks'
    hidden_notes: int  # notes left out because they sounded under a higher one (chords)

    @property
    def num_bars(self) -> int:
        return len(self.bars)


@dataclass
class Accompaniment:
    """One accompanied melody."""

    composer: str
    score: Score  # the melody track, unchanged, then the generated parts (without their notes that double the melody)
    melody: Score  # the given melody alone
    full: Score  # the generated full-piece section as generated (melody doublings included), on the melody's timeline
    ids: list[int]  # the full section's tokens
    bars: int  # as many as the melody's
    windows: int  # generate() calls it took
    cut_bars: int  # bars the context cut short (notes after the cut are lost)
    syntax_error_rate: float  # miditok's tokens_errors on the full section
    settings: dict = field(default_factory=dict)

    def metrics(self, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> dict:
        """Melody adherence and harmonic fit of the generated full section (midilm.metrics.piece)."""
        return accompaniment_metrics(self.melody, self.full, onset_tolerance)


def melody_prompt(tokenizer, score: Score, warn_on_chords: bool = False, name: str = "the melody") -> MelodyPrompt:
    """The melody of `score` (a marked melody track, else the top voice; midilm.core.melody) as bars of
    tokens. InputError when nothing in it can be tokenized."""
    kept = extract_melody(score, trim=False)  # the notes as given: the output's melody track
    trimmed = extract_melody(score, trim=True)  # one voice, as the training data's melody sections
    if not kept.score.note_num():
        raise InputError(f"{name}: no pitched notes")
    if warn_on_chords and kept.hidden_notes:
        warnings.warn(
            (
                f"{name} has chords ({kept.hidden_notes} notes under the top voice of {kept.source}): accompanying its "
                "top voice"
            ),
            stacklevel=3,
        )
    low, high = tokenizer.config.pitch_range
    pitches = trimmed.score.tracks[0].notes.numpy()["pitch"]
    inside = int(((pitches >= low) & (pitches < high)).sum())
    if not inside:
        raise InputError(f"{name}: none of its notes is in the tokenizer's pitch range [{low}, {high})")
    if inside < len(pitches):
        warnings.warn(
            (
                f"{name}: {len(pitches) - inside} notes outside the tokenizer's pitch range [{low}, {high}) are "
                "kept but not seen by the model"
            ),
            stacklevel=3,
        )
    starts_bar = np.asarray(bar_start_table(tokenizer))
    ids = encode_ids(tokenizer, trimmed.score)
    bars = split_bars(ids, starts_bar)
    return MelodyPrompt(kept.score, bars, bar_time_signatures(tokenizer, bars), kept.source, kept.hidden_notes)


def load_melody(tokenizer, path: str | Path) -> MelodyPrompt:
    """A melody MIDI file, checked as prompts are; chords give their top voice and one warning."""
    path = Path(path)
    require_usable_midi(path, "--melody_midi")
    return melody_prompt(tokenizer, Score(path), warn_on_chords=True, name=f"--melody_midi {path}")


def plan_window(
    melody_lengths: list[int], done_lengths: list[int], context: int, full_per_bar: float
) -> tuple[int, int]:
    """(a, b): the melody bars a..b (exclusive) of the next window, which reads the written bars a..c
    (c = len(done_lengths)) again and writes bars c..b. The bars read again take at most
    `PAST_SHARE` of the context; b goes as far as the melody and the estimated full bars fit."""
    n, c = len(melody_lengths), len(done_lengths)
    a, past = c, 0
    while a > 0 and past + melody_lengths[a - 1] + done_lengths[a - 1] <= PAST_SHARE * context:
        a -= 1
        past += melody_lengths[a] + done_lengths[a]
    while a < c and ROW_OVERHEAD + past + melody_lengths[c] + 1 > context:  # the next melody bar must fit
        past -= melody_lengths[a] + done_lengths[a]
        a += 1
    used = ROW_OVERHEAD + past + melody_lengths[c] + full_per_bar
    b = c + 1
    while b < n and used + melody_lengths[b] + full_per_bar <= context:
        used += melody_lengths[b] + full_per_bar
        b += 1
    return a, b


def check_trained_for_accompaniment(config, model_dir) -> None:
    """One clear error for a model that never read an accompaniment row. Its tokenizer cannot tell:
    every midilm tokenizer has the MELODY/FULL tokens; config.json's `midilm_tasks` (train.py) can."""
    tasks = model_tasks(config)
    if "accompaniment" not in tasks:
        raise InputError(
            f"--model_dir {model_dir}: this model was trained on {', '.join(tasks)} rows only, never on accompaniment; "
            "prepare the data with --tasks continuation,accompaniment and train it again"
        )


def check_melody_fits(melody: MelodyPrompt, context: int) -> None:
    """InputError, before any sampling, when one bar of melody leaves no room for its full bar."""
    for i, bar in enumerate(melody.bars):
        if ROW_OVERHEAD + 2 * len(bar) > context:
            raise InputError(
                f"--melody_midi: bar {i + 1} of the melody takes {len(bar)} tokens; with its full bar it cannot fit "
                f"the model's context of {context} tokens (windows are whole bars)"
            )


@dataclass
class _Window:
    """One row's window: melody bars a..b, of which c..b are to be written (a..c are read again)."""

    row: int
    a: int
    b: int
    c: int


class _Accompanist:
    """The state of one `accompany` call: what each row has written so far, and how to write more."""

    def __init__(
        self,
        model,
        tokenizer,
        composer_map: ComposerMap,
        melody: MelodyPrompt,
        composer_ids: list[int],
        settings: SamplingSettings,
    ):
        self.model, self.tokenizer, self.melody, self.settings = model, tokenizer, melody, settings
        self.composer_ids, self.none_id = composer_ids, composer_map.none_id
        self.config, self.context = model.config, context_length(model.config)
        self.layout = RowLayout.for_tokenizer(tokenizer)
        self.scale = settings.effective_guidance_scale(composer_ids, composer_map.none_id)
        self.remi_grammar = RemiGrammar.for_tokenizer(tokenizer) if settings.grammar else None
        self.note_guard = guard_processor(tokenizer, self.config) if settings.guard else None
        self.base, self.starts_bar = vocab_base_tokens(tokenizer), np.asarray(bar_start_table(tokenizer))
        self.melody_lengths = [len(b) for b in melody.bars]
        self.first_guess = FULL_PER_MELODY_TOKEN * max(1.0, float(np.mean(self.melody_lengths)))
        self.done: list[list[np.ndarray]] = [[] for _ in composer_ids]
        self.cut = [0] * len(composer_ids)
        self.windows = 0

    def plan(self) -> list[_Window]:
        """The next window of every row that has bars left to write."""
        plans = []
        for k in range(len(self.composer_ids)):
            written = [len(b) for b in self.done[k]]
            if len(written) < self.melody.num_bars:
                per_bar = float(np.mean(written)) if written else self.first_guess
                a, b = plan_window(self.melody_lengths, written, self.context, per_bar)
                plans.append(_Window(k, a, b, len(written)))
        return plans

    def prompts(self, plans: list[_Window]) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows' rows, padded on the left (then their unconditional twins under guidance)."""
        rows = []
        for w in plans:
            written = np.concatenate(self.done[w.row][w.a : w.c]).tolist() if w.c > w.a else []
            melody = np.concatenate(self.melody.bars[w.a : w.b]).tolist()
            rows.append((melody, written, self.composer_ids[w.row]))
        if self.scale != 1.0:
            rows += [(melody, written, self.none_id) for melody, written, _ in rows]
        prompts = [self.layout.accompaniment_prompt(composer, melody, written) for melody, written, composer in rows]
        return left_padded(prompts, self.config.pad_token_id)

    def processors(self, plans: list[_Window]) -> LogitsProcessorList:
        doubled = 2 if self.scale != 1.0 else 1
        targets = torch.tensor([w.b - w.a for w in plans] * doubled)
        signatures = torch.full((len(plans), max(w.b - w.a for w in plans)), -1, dtype=torch.long)
        for i, w in enumerate(plans):
            signatures[i, : w.b - w.a] = torch.tensor(self.melody.time_signatures[w.a : w.b])
        signatures = torch.cat([signatures] * doubled)
        processors = LogitsProcessorList()
        if self.remi_grammar is not None:
            processors.append(GrammarLogitsProcessor(grammar=self.remi_grammar))
        if self.note_guard is not None:
            self.note_guard.reset()  # a new window: the guard reads every row's prefix afresh
            processors.append(self.note_guard)
        processors.append(
            BarLimitLogitsProcessor(self.tokenizer, self.layout.full, self.layout.eos, targets, signatures)
        )
        processors.append(self.settings.sampler(self.scale, seed_offset=self.windows))
        return processors

    def step(self) -> bool:
        """Write one window of every unfinished row in one generate() call; False when all are done."""
        plans = self.plan()
        if not plans:
            return False
        input_ids, attention_mask = self.prompts(plans)
        width = input_ids.shape[1]
        config = self.config
        gen_config = greedy_config(self.context - width, config.bos_token_id, config.eos_token_id, config.pad_token_id)
        device = self.model.device
        output = self.model.generate(
            input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_config,
            logits_processor=self.processors(plans),
        )
        self.windows += 1
        for i, w in enumerate(plans):
            self.keep(w, output[i, width:].tolist())
        return True

    def keep(self, w: _Window, new: list[int]) -> None:
        """The whole bars a window wrote, added to its row."""
        eos, n = self.layout.eos, self.melody.num_bars
        ended = eos in new
        new = new[: new.index(eos)] if ended else new
        bars = split_bars(np.asarray(new, dtype=np.int64), self.starts_bar)[: n - w.c]
        if not ended and len(bars) > 1:
            bars = bars[:-1]  # cut by the context: the next window writes it again
        elif not ended and bars:
            self.cut[w.row] += 1  # one bar longer than the room left: keep what is complete of it
        if self.remi_grammar is not None and bars:  # never hand the next window half a note
            bars[-1] = bars[-1][: self.remi_grammar.complete_length(bars[-1].tolist())]
        if not bars or not len(bars[-1]):  # nothing written (every token masked): an empty bar keeps the windows moving
            bars = bars[:-1] + [empty_bar(self.tokenizer, self.base, self.melody.bars[w.c + max(0, len(bars) - 1)])]
        self.done[w.row].extend(bars)

    def results(self, composer_map: ComposerMap) -> list[Accompaniment]:
        record = self.settings.record(self.scale, guard_bounds(self.note_guard))
        melody_score = self.melody.melody
        out = []
        for k, composer_id in enumerate(self.composer_ids):
            ids = np.concatenate(self.done[k]).tolist()
            full = decode_ids(self.tokenizer, ids).resample(melody_score.ticks_per_quarter, min_dur=1)
            full.tempos, full.time_signatures = melody_score.tempos.copy(), melody_score.time_signatures.copy()
            full.key_signatures = melody_score.key_signatures.copy()
            out.append(
                Accompaniment(
                    composer=composer_map.name_of(composer_id),
                    score=merge_with_melody(melody_score, full),
                    melody=melody_score,
                    full=full,
                    ids=ids,
                    bars=len(self.done[k]),
                    windows=self.windows,
                    cut_bars=self.cut[k],
                    syntax_error_rate=count_syntax_errors(self.tokenizer, ids),
                    settings=dict(record),
                )
            )
        return out


@torch.no_grad()
def accompany(
    model,
    tokenizer,
    composer_map: ComposerMap,
    melody: MelodyPrompt,
    composers: list[str],
    settings: SamplingSettings | None = None,
    *,
    defaults: dict | None = None,
) -> list[Accompaniment]:
    """One accompaniment of `melody` per entry of `composers` (names or `none`), with an in-memory
    model; all rows of a window go through one batched generate() call. `settings` (None: all
    defaults): what is left unset comes from `defaults` (`sampling_defaults` of a folder), else from the
    model's config and generation_config; the melody sets the length. The musical guard (`midilm.sampling.guard`)
    covers the full section when the model carries its bounds."""
    check_trained_for_accompaniment(model.config, getattr(model.config, "_name_or_path", "") or "(in memory)")
    composer_ids = composer_ids_of(composer_map, composers)
    check_melody_fits(melody, context_length(model.config))
    settings = model_settings(model.config, model.generation_config, settings, with_length=False, defaults=defaults)
    accompanist = _Accompanist(model, tokenizer, composer_map, melody, composer_ids, settings)
    while accompanist.step():
        pass
    return accompanist.results(composer_map)


def merge_with_melody(melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> Score:
    """The melody's track first, unchanged, then the generated parts less their notes that double a
    melody note (same pitch and onset), which would otherwise sound twice on one MIDI channel.
    Both scores in ticks of the same resolution."""
    out = melody.copy()
    tpq = melody.ticks_per_quarter
    notes = [t.notes.numpy() for t in melody.tracks]
    mel_start = np.concatenate([n["time"] for n in notes]).astype(np.float64) / tpq
    mel_pitch = np.concatenate([n["pitch"] for n in notes]).astype(np.int64)
    for track in full.tracks:
        arr = track.notes.numpy()
        doubles = onset_pitch_matches(
            mel_start, mel_pitch, arr["time"].astype(np.float64) / tpq, arr["pitch"].astype(np.int64), onset_tolerance
        )
        part = Track(name=track.name or "accompaniment", program=track.program, is_drum=track.is_drum)
        for note, double in zip(track.notes, doubles):
            if not double or track.is_drum:
                part.notes.append(note.copy())
        if len(part.notes):
            out.tracks.append(part)
    return out


# ---------------------------------------------------------------------------------------------
# From a model folder: checks first, then sampling


@dataclass
class AccompanimentPlan(SamplingPlan):
    """Everything checked before the weights are read; `run(model)` samples (midilm.sampling.plan)."""

    model_dir: str
    tokenizer: object = field(repr=False)
    composer_map: ComposerMap
    settings: SamplingSettings  # resolved against the folder's defaults
    melody: MelodyPrompt
    composers: list[str]

    def run(self, model) -> list[Accompaniment]:
        return accompany(model, self.tokenizer, self.composer_map, self.melody, self.composers, self.settings)


def prepare_accompaniment(
    model_dir: str | Path,
    melody_midi: str | Path,
    composer: str | None = None,
    num_samples: int = 1,
    settings: SamplingSettings | None = None,
) -> AccompanimentPlan:
    """Check the model folder, the melody file and the settings; InputError
    on bad input. `composer` as in generate.py (a name, a list, `all`); without one the model accompanies
    unconditionally. The melody sets the length, so max_new_tokens does not apply."""
    settings = settings or SamplingSettings()
    config, tokenizer, composer_map = load_midilm_dir(model_dir)
    check_trained_for_accompaniment(config, model_dir)
    resolved = settings.resolve(sampling_defaults(model_dir))
    composers = sample_composers(composer_map, composer or NONE.lower(), num_samples)
    melody = load_melody(tokenizer, melody_midi)
    check_melody_fits(melody, context_length(config))
    return AccompanimentPlan(str(model_dir), tokenizer, composer_map, resolved, melody, composers)


def harmonize(
    model_dir: str | Path,
    melody_midi: str | Path,
    composer: str | None = None,
    num_samples: int = 1,
    *,
    device: str | None = None,
    settings: SamplingSettings | None = None,
) -> list[Accompaniment]:
    """Load a model folder and accompany a melody file: `prepare_accompaniment` then `run`."""
    job = prepare_accompaniment(model_dir, melody_midi, composer, num_samples, settings)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return job.run(load_model(model_dir, device))
