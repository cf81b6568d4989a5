"""Infilling: rewrite bars i..j of a piece in a composer's style; every other note comes back as it was.

    import midilm

    settings = midilm.SamplingSettings(seed=0)
    for i, result in enumerate(midilm.infill("model_output", "piece.mid", "9-12", "bach", 2, settings=settings)):
        result.score.dump_midi(f"infill_bach_{i}.mid")

A model trained on `prepare_dataset.py --tasks continuation,infill` data has read
`[BOS, COMPOSER, bars before the span, GAP, bars after it, FILL, the span, EOS]` (midilm.core.rows). Here the prompt
is that row up to FILL, with as many of the nearest bars on each side as the context holds beside the room kept
for the span, and one `generate()` call writes the span under the REMI grammar, the musical guard, our CFG
sampler (its unconditional rows swap the composer token only) and accompaniment's `BarLimitLogitsProcessor`
(counting bars after FILL): the span's first token begins a bar, each bar has the time signature of the bar it
replaces, EOS may only come after exactly as many bars as the span had, and the next bar line is turned into EOS.
A span the context cut short (or that the model ended early) is completed with empty bars, so the span always
has its bars, however poor the model.

The output is the original score with the notes whose onsets lie in the span taken out and the new notes put in
(on the first track of their program, else on a new track), each placed in its bar from the bar's original line
and ending by the line after the span; everything else (notes outside the span, tempos, time signatures, key
signatures, other events) is the file's own, untouched: nothing outside the span goes through the tokenizer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from miditok.utils import compute_ticks_per_bar, get_bars_ticks
from symusic import Score, TimeSignature, Track
from transformers import LogitsProcessorList

from midilm.core.errors import InputError
from midilm.core.midi_checks import require_usable_midi
from midilm.core.modeling import context_length, load_midilm_dir, model_tasks, sampling_defaults
from midilm.core.rows import OVERHEAD, RowLayout
from midilm.core.tokenizer import NONE, ComposerMap, bar_start_table, encode_ids, infill_token_ids, vocab_base_tokens
from midilm.data.dataset import empty_bar, split_bars
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
from midilm.sampling.settings import SamplingSettings, fast_sampling, greedy_config
from midilm.sampling.windows import left_padded

ROW_OVERHEAD = OVERHEAD["infill"]
# Room kept for the new span: this many times its bars' tokens (the original span's, or the piece's mean bar,
# whichever is more). A rewrite may be busier than the original; room left over goes to the span too.
SPAN_ROOM_FACTOR = 1.5


def parse_bars(text: str, flag: str = "--bars") -> tuple[int, int]:
    """`9-12` (or `9`): the first and last bar, 1-based and inclusive; InputError when unparsable, reversed or empty."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text or ""))
    if not match:
        raise InputError(f"{flag} {text!r}: give a bar range such as 9-12 (first and last bar, counted from 1)")
    first, last = int(match[1]), int(match[2] or match[1])
    if first < 1:
        raise InputError(f"{flag} {text}: bars are counted from 1")
    if last < first:
        raise InputError(f"{flag} {text}: the range is reversed (empty); give the first bar, then the last")
    return first, last


def bar_lines(score: Score, count: int) -> list[int]:
    """The ticks of `score` where bars 0..count-1 start, and the line after the last (`count + 1` ticks), by
    miditok's reading of its time signatures; past the score's end, bars of its last time signature."""
    ticks = list(get_bars_ticks(score))[: count + 1]
    signatures = [ts for ts in score.time_signatures if ts.numerator > 0 and ts.denominator > 0]
    last = signatures[-1] if signatures else TimeSignature(0, 4, 4)
    step = compute_ticks_per_bar(last, score.ticks_per_quarter)
    while len(ticks) < count + 1:
        ticks.append(ticks[-1] + step)
    return ticks


@dataclass
class InfillPiece:
    """A piece ready to have some of its bars rewritten."""

    score: Score  # the file as read: everything outside the span comes from here
    bars: list[np.ndarray]  # its tokens, one array per bar, from bar 0 to its last note's bar
    lines: list[int]  # ticks of `score` where each bar starts, and the line after the last bar
    time_signatures: list[int]  # index (bars.time_signature_table) of each bar's time signature, -1: none
    source: str

    @property
    def num_bars(self) -> int:
        return len(self.bars)


def piece_of(tokenizer, score: Score, source: str = "the piece", flag: str = "--infill_midi") -> InfillPiece:
    """A score as bars of tokens with their bar lines; InputError when the tokenizer's bars are not the file's."""
    ids = encode_ids(tokenizer, score)
    if not len(ids):
        raise InputError(f"{flag} {source}: nothing the tokenizer can represent")
    bars = split_bars(ids, np.asarray(bar_start_table(tokenizer)))
    counted = len(get_bars_ticks(score, only_notes_onsets=True))
    if counted != len(bars):
        raise InputError(
            f"{flag} {source}: the tokenizer reads {len(bars)} bars where the file's time signatures give {counted} "
            "(a time signature it cannot represent?), so bar numbers would not be the file's"
        )
    return InfillPiece(score, bars, bar_lines(score, len(bars)), bar_time_signatures(tokenizer, bars), source)


def load_piece(tokenizer, path: str | Path) -> InfillPiece:
    """A MIDI file, checked as prompts are, as an InfillPiece."""
    path = Path(path)
    require_usable_midi(path, "--infill_midi")
    return piece_of(tokenizer, Score(path), str(path))


def check_trained_for_infill(config, tokenizer, model_dir) -> None:
    """One clear error for a model that cannot infill: a tokenizer from before the GAP/FILL markers, or a model
    whose config.json (`midilm_tasks`) says it never read an infill row (no record: continuation only)."""
    if infill_token_ids(tokenizer) is None:
        raise InputError(
            f"--model_dir {model_dir}: its tokenizer was made before the infill task (no GAP/FILL markers), so this "
            "model cannot infill; prepare the data with --tasks continuation,infill and train a new model"
        )
    tasks = model_tasks(config)
    if "infill" not in tasks:
        raise InputError(
            f"--model_dir {model_dir}: this model was trained on {', '.join(tasks)} rows only, never on infill; "
            "prepare the data with --tasks continuation,infill and train it again"
        )


def span_room(piece: InfillPiece, first: int, stop: int) -> int:
    """Tokens kept for the new span of bars first..stop (0-based, exclusive)."""
    lengths = [len(b) for b in piece.bars]
    return math.ceil(SPAN_ROOM_FACTOR * max(sum(lengths[first:stop]), (stop - first) * float(np.mean(lengths))))


def plan_context(lengths: list[int], first: int, stop: int, context: int, room: int) -> tuple[int, int]:
    """(a, b): the bars a..first before the span and stop..b after it that the prompt holds: the nearest ones,
    taken in turn from each side while they fit the context beside the row's markers and `room` for the span.
    InputError when not even one bar on each side (where the piece has one) fits."""
    n = len(lengths)
    used = ROW_OVERHEAD + room + (lengths[first - 1] if first > 0 else 0) + (lengths[stop] if stop < n else 0)
    if used > context:
        raise InputError(
            f"--bars {first + 1}-{stop}: the span ({stop - first} bars, {room} tokens kept for it) and one bar of "
            f"context on each side need {used} tokens, more than the model's context of {context}; choose fewer bars"
        )
    a, b = (first - 1 if first > 0 else first), (stop + 1 if stop < n else stop)
    grown = True
    while grown:
        grown = False
        if a > 0 and used + lengths[a - 1] <= context:
            a, used, grown = a - 1, used + lengths[a - 1], True
        if b < n and used + lengths[b] <= context:
            b, used, grown = b + 1, used + lengths[b], True
    return a, b


@dataclass
class Infill:
    """One piece with its span rewritten."""

    composer: str
    score: Score  # the original file's score, bars first..last replaced by the new notes
    span: Score  # the new notes alone, on the piece's timeline (its ticks, tempos and time signatures)
    ids: list[int]  # the span's tokens, exactly its bars (empty ones added where the model stopped short)
    bars: tuple[int, int]  # the span: first and last bar, 1-based, inclusive
    context_bars: dict  # the bars the prompt held: {"before": [first, last] or None, "after": ...}, 1-based
    cut_bars: int  # bars the model did not finish (context ran out, or it ended early): completed or left empty
    replaced_notes: int  # notes of the original whose onsets lay in the span
    syntax_error_rate: float  # miditok's tokens_errors on the span
    settings: dict = field(default_factory=dict)


def place_span(piece: InfillPiece, first: int, stop: int, span: Score) -> Score:
    """`span` (decoded from tokens that start with bar `first`'s bar line) on the piece's timeline: each note in its
    bar at the same offset in quarter notes from the bar's original line, ending by the line after bar stop-1."""
    out = Score(piece.score.ticks_per_quarter)
    out.tempos, out.time_signatures = piece.score.tempos.copy(), piece.score.time_signatures.copy()
    out.key_signatures = piece.score.key_signatures.copy()
    count = stop - first
    own = np.asarray(bar_lines(span, count), dtype=np.int64)
    lines = np.asarray(piece.lines[first : stop + 1], dtype=np.int64)
    scale = piece.score.ticks_per_quarter / span.ticks_per_quarter
    for track in span.tracks:
        notes = track.notes.numpy()
        bar = np.clip(np.searchsorted(own, notes["time"], side="right") - 1, 0, count - 1)
        onset = lines[bar] + np.round((notes["time"] - own[bar]) * scale).astype(np.int64)
        end = np.minimum(onset + np.maximum(1, np.round(notes["duration"] * scale).astype(np.int64)), lines[-1])
        keep = onset < lines[bar + 1]  # a note past its bar's original length (a bar the time signature cut)
        placed = Track(name=track.name, program=track.program, is_drum=track.is_drum)
        placed.notes = type(track.notes).from_numpy(
            *(
                np.ascontiguousarray(column[keep], dtype=dtype)
                for column, dtype in (
                    (onset, np.int32),
                    (end - onset, np.int32),
                    (notes["pitch"], np.int8),
                    (notes["velocity"], np.int8),
                )
            )
        )
        if len(placed.notes):
            out.tracks.append(placed)
    return out


def splice(piece: InfillPiece, first: int, stop: int, placed: Score) -> tuple[Score, int]:
    """The piece with the notes whose onsets lie in bars first..stop-1 replaced by `placed`'s (same ticks): each new
    note goes to the first track of its program (and drum flag), else to a new track. (score, notes replaced)."""
    start, end = piece.lines[first], piece.lines[stop]
    out = piece.score.copy()
    replaced = 0
    for track in out.tracks:
        before = len(track.notes)
        track.notes.filter(lambda n: not start <= n.time < end, inplace=True)
        replaced += before - len(track.notes)
    for track in placed.tracks:
        target = next((t for t in out.tracks if t.program == track.program and t.is_drum == track.is_drum), None)
        if target is None:
            target = Track(name=f"infill {track.name}".strip(), program=track.program, is_drum=track.is_drum)
            out.tracks.append(target)
            target = out.tracks[-1]
        target.notes.extend(track.notes.copy())
        target.notes.sort(inplace=True)
    return out, replaced


@torch.no_grad()
def infill_span(
    model,
    tokenizer,
    composer_map: ComposerMap,
    piece: InfillPiece,
    bars: tuple[int, int],
    composers: list[str],
    settings: SamplingSettings | None = None,
    *,
    defaults: dict | None = None,
) -> list[Infill]:
    """One rewrite of `bars` (first, last: 1-based, inclusive) of `piece` per entry of `composers` (names or
    `none`), with an in-memory model, all in one batched generate() call. `settings` (None: all defaults):
    what is left unset comes from `defaults` (`sampling_defaults` of a folder), else from the model's config and
    generation_config; the span sets the length, so max_new_tokens does not apply."""
    config = model.config
    check_trained_for_infill(config, tokenizer, getattr(config, "_name_or_path", "") or "(in memory)")
    first, stop = check_span(piece, bars)
    context = context_length(config)
    room = span_room(piece, first, stop)
    a, b = plan_context([len(bar) for bar in piece.bars], first, stop, context, room)
    composer_ids = composer_ids_of(composer_map, composers)
    settings = model_settings(config, model.generation_config, settings, with_length=False, defaults=defaults)
    layout = RowLayout.for_tokenizer(tokenizer)
    scale = settings.effective_guidance_scale(composer_ids, composer_map.none_id)

    # The prompts: [BOS, COMPOSER, bars a..first, GAP, bars stop..b, FILL], then their unconditional twins
    rows = infill_prompts(layout, composer_map.none_id, composer_ids, piece, (a, first, stop, b), scale)
    input_ids, attention_mask = left_padded(rows, config.pad_token_id)
    width = input_ids.shape[1]

    # The processors: grammar, guard, exactly the span's bars with their time signatures, then CFG sampling
    count = stop - first
    processors, grammar, note_guard = infill_processors(
        tokenizer, config, settings, layout, piece.time_signatures[first:stop], count, len(rows), scale
    )
    gen_config = greedy_config(context - width, config.bos_token_id, config.eos_token_id, config.pad_token_id)
    speed = fast_sampling(gen_config, settings.static_cache, settings.compile, settings.compile_backend, model.device)
    output = model.generate(
        input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        generation_config=gen_config,
        logits_processor=processors,
    )

    # Each span as exactly its bars, placed in the piece
    record = settings.record(scale, guard_bounds(note_guard), **speed)
    starts_bar, base = np.asarray(bar_start_table(tokenizer)), vocab_base_tokens(tokenizer)
    context_bars = {"before": [a + 1, first] if first > a else None, "after": [stop + 1, b] if b > stop else None}
    results = []
    for k, composer_id in enumerate(composer_ids):
        new = output[k, width:].tolist()
        ids, cut = span_ids(new, layout, config.pad_token_id, starts_bar, grammar, tokenizer, base, piece, first, stop)
        placed = place_span(piece, first, stop, decode_ids(tokenizer, ids))
        score, replaced = splice(piece, first, stop, placed)
        results.append(
            Infill(
                composer=composer_map.name_of(composer_id),
                score=score,
                span=placed,
                ids=ids,
                bars=(first + 1, stop),
                context_bars=context_bars,
                cut_bars=min(cut, count),
                replaced_notes=replaced,
                syntax_error_rate=count_syntax_errors(tokenizer, ids),
                settings=dict(record),
            )
        )
    return results


def infill_prompts(
    layout: RowLayout,
    none_id: int,
    composer_ids: list[int],
    piece: InfillPiece,
    bounds: tuple[int, int, int, int],
    scale: float,
) -> list[list[int]]:
    """The prompt rows, one per composer, then (with guidance) as many unconditional twins; `bounds` = (a, first,
    stop, b): bars a..first before the GAP, bars stop..b after it."""
    a, first, stop, b = bounds
    before = np.concatenate(piece.bars[a:first]).tolist() if first > a else []
    after = np.concatenate(piece.bars[stop:b]).tolist() if b > stop else []
    rows = [layout.infill_prompt(c, before, after) for c in composer_ids]
    if scale != 1.0:
        rows += [layout.infill_prompt(none_id, before, after) for _ in composer_ids]
    return rows


def infill_processors(
    tokenizer,
    config,
    settings: SamplingSettings,
    layout: RowLayout,
    time_signatures: list[int],
    count: int,
    n_rows: int,
    scale: float,
) -> tuple[LogitsProcessorList, RemiGrammar | None, object]:
    """(processors, grammar or None, note guard or None): the grammar, the guard, exactly the span's `count` bars with
    their `time_signatures`, then CFG sampling."""
    processors = LogitsProcessorList()
    grammar = RemiGrammar.for_tokenizer(tokenizer) if settings.grammar else None
    if grammar is not None:
        processors.append(GrammarLogitsProcessor(grammar=grammar))
    note_guard = guard_processor(tokenizer, config) if settings.guard else None
    if note_guard is not None:
        processors.append(note_guard)
    signatures = torch.tensor([time_signatures] * n_rows, dtype=torch.long)
    targets = torch.full((n_rows,), count, dtype=torch.long)
    processors.append(BarLimitLogitsProcessor(tokenizer, layout.fill, layout.eos, targets, signatures))
    processors.append(settings.sampler(scale))
    return processors, grammar, note_guard


def span_ids(
    new: list[int],
    layout: RowLayout,
    pad_token_id: int,
    starts_bar: np.ndarray,
    grammar: RemiGrammar | None,
    tokenizer,
    base,
    piece: InfillPiece,
    first: int,
    stop: int,
) -> tuple[list[int], int]:
    """The tokens generated for one span as exactly its bars: a bar the context cut keeps its whole notes, missing
    bars are empty ones. (ids, bars cut or missing)."""
    count = stop - first
    ended = layout.eos in new
    new = new[: new.index(layout.eos)] if ended else [t for t in new if t != pad_token_id]
    written = split_bars(np.asarray(new, dtype=np.int64), starts_bar)[:count]
    cut = 0
    if not ended and written:  # the context ran out inside the last bar: keep its whole notes
        cut += 1
        if grammar is not None:
            written[-1] = written[-1][: grammar.complete_length(written[-1].tolist())]
        if not len(written[-1]):
            written = written[:-1]
    cut += count - len(written)
    written += [empty_bar(tokenizer, base, piece.bars[first + j]) for j in range(len(written), count)]
    return np.concatenate(written).tolist(), cut


def check_span(piece: InfillPiece, bars: tuple[int, int]) -> tuple[int, int]:
    """(first, stop): bars (1-based, inclusive) as 0-based indexes, stop exclusive; InputError outside the piece."""
    first, last = bars
    if first < 1 or last < first:
        raise InputError(f"--bars {first}-{last}: give the first bar, then the last, counted from 1")
    if last > piece.num_bars:
        raise InputError(f"--bars {first}-{last}: {piece.source} has {piece.num_bars} bars (counted from 1)")
    return first - 1, last


# ---------------------------------------------------------------------------------------------
# From a model folder: checks first, then sampling


@dataclass
class InfillPlan(SamplingPlan):
    """Everything checked before the weights are read; `run(model)` samples (midilm.sampling.plan)."""

    model_dir: str
    tokenizer: object = field(repr=False)
    composer_map: ComposerMap
    settings: SamplingSettings  # resolved against the folder's defaults
    piece: InfillPiece
    bars: tuple[int, int]  # 1-based, inclusive
    composers: list[str]  # one per sample

    def run(self, model) -> list[Infill]:
        return infill_span(
            model, self.tokenizer, self.composer_map, self.piece, self.bars, self.composers, self.settings
        )


def prepare_infill(
    model_dir: str | Path,
    infill_midi: str | Path,
    bars: str | tuple[int, int],
    composer: str | None = None,
    num_samples: int = 1,
    settings: SamplingSettings | None = None,
) -> InfillPlan:
    """Check the model folder, the piece, the bar range (`"9-12"` or (9, 12): 1-based, inclusive) and the settings;
    InputError on bad input, before any weight is read. `composer` as in generate.py (a name, a list, `all`); without
    one the model rewrites unconditionally."""
    settings = settings or SamplingSettings()
    span = parse_bars(bars) if bars is None or isinstance(bars, str) else (int(bars[0]), int(bars[1]))
    config, tokenizer, composer_map = load_midilm_dir(model_dir)
    check_trained_for_infill(config, tokenizer, model_dir)
    resolved = settings.resolve(sampling_defaults(model_dir))
    composers = sample_composers(composer_map, composer or NONE.lower(), num_samples)
    piece = load_piece(tokenizer, infill_midi)
    first, stop = check_span(piece, span)
    plan_context([len(b) for b in piece.bars], first, stop, context_length(config), span_room(piece, first, stop))
    return InfillPlan(str(model_dir), tokenizer, composer_map, resolved, piece, span, composers)


def infill(
    model_dir: str | Path,
    infill_midi: str | Path,
    bars: str | tuple[int, int],
    composer: str | None = None,
    num_samples: int = 1,
    *,
    device: str | None = None,
    settings: SamplingSettings | None = None,
) -> list[Infill]:
    """Load a model folder and rewrite `bars` of a MIDI file: `prepare_infill` then `run`."""
    job = prepare_infill(model_dir, infill_midi, bars, composer, num_samples, settings)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return job.run(load_model(model_dir, device))
