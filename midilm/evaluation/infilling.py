"""Infilling figures for a model trained with `--tasks ...,infill`: held-out spans scored and rewritten.

Spans. For each chosen held-out piece, `spans_per_piece` spans of 1 to `max_span_bars` whole bars, drawn with a
generator seeded by (seed, piece's place in the list): every span has at least one bar on each side, so both of
its seams exist. The same seed gives the same spans on every run.

Likelihood. The span's tokens (its bars, EOS not counted) are scored twice by the same model, per note of the real
span: in the infill layout, given the bars before AND after it (`[BOS, COMPOSER, before, GAP, after, FILL, span]`, the
bars `midilm.sampling.infilling.plan_context` would give the prompt), and as a continuation of the same bars before it
alone (`[BOS, COMPOSER, before, span]`). The relative reduction `1 - infill / prefix` is what the suffix is worth; the
same bars before on both sides, so the suffix is the only difference. A control scores the span a third way, in the
infill layout with no bars after it (`[BOS, COMPOSER, before, GAP, FILL, span]`): it separates what the bars after
tell the model (infill against this control) from what the layout itself costs (this control against prefix).

Rewrites. Each span is rewritten by `midilm.sampling.infilling.infill_span` (the generate.py --infill_midi path:
grammar, guard, CFG, exact bar count, spliced into the piece), under the piece's composer, seeded.
- Music metrics (`midilm.metrics.piece.piece_metrics`) of the rewritten spans against the real spans they replaced
  (`compare`, `summary_distance`'s mean standardised gap), beside the same gap between the real spans and the
  real spans of another draw (other places of the same pieces): how far two sets of real spans that size lie apart.
- Seams. A rewrite can be good music in itself and still not join its neighbours. At each of the span's two bar
  lines (entry: the last bar before it into its first bar; exit: its last bar into the first bar after it) three
  jumps are measured on the whole score, all voices but drums:
    top_voice_leap  |highest pitch at the bar's last onset - highest pitch at the next bar's first onset|
                    (semitones): the melodic step a listener follows across the bar line;
    register_shift  |mean pitch of the bar - mean pitch of the next bar| (semitones): a texture moved up or down;
    density_jump    |log2((notes in the next bar + 1) / (notes in the bar + 1))|: a texture thinned or thickened.
  The same jumps of the real piece at the same bar lines are the reference (real music changes across a bar line
  too, and more at some places than others): a rewrite that joins well has jumps no larger than the real ones.
- Notes outside the span: every note of the original whose onset lies outside the span must come back identical
  (program, onset, duration, pitch, velocity); the share of spans where they all do must be 1.
- Syntax errors of the rewritten spans (miditok's `tokens_errors`): must be 0.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import torch
from symusic import Score

from midilm.core.errors import InputError
from midilm.core.modeling import context_length
from midilm.core.rows import HEADER_TOKENS, RowLayout
from midilm.evaluation.samples import mean_or_none
from midilm.metrics.compare import compare, summary_distance
from midilm.metrics.piece import piece_metrics
from midilm.sampling.generation import decode_ids
from midilm.sampling.infilling import infill_span, piece_of, plan_context
from midilm.sampling.settings import SamplingSettings

SEAM_MEASURES = ("top_voice_leap", "register_shift", "density_jump")


def draw_spans(num_bars: int, count: int, max_span_bars: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to `count` distinct spans (first, stop: 0-based bars, stop exclusive) of 1 to `max_span_bars` bars, each
    with at least one bar before and after it; none in a piece of fewer than 3 bars."""
    spans: list[tuple[int, int]] = []
    if num_bars < 3:
        return spans
    for _ in range(8 * count):
        if len(spans) == count:
            break
        length = 1 + int(rng.integers(min(max_span_bars, num_bars - 2)))
        first = 1 + int(rng.integers(num_bars - 1 - length))
        if (first, first + length) not in spans:
            spans.append((first, first + length))
    return spans


def choose_pieces(real: list[dict], composers: list[str], per_composer: int) -> list[dict]:
    """The `per_composer` held-out pieces of each composer with the fewest notes (then by name), as the
    accompaniment figures choose theirs: the ones a CPU rewrites in reasonable time."""
    chosen = []
    for c in composers:
        own = sorted((p for p in real if p["composer"] == c), key=lambda p: (p["n_notes"], p["source"]))
        chosen += own[:per_composer]
    return chosen


@torch.no_grad()
def span_nll(model, rows: list[tuple[list[int], int, int]], pad_id: int) -> list[float]:
    """Per row (ids, span start, span stop): the summed NLL (nats) of ids[start:stop] given everything before."""
    out = []
    for ids, start, stop in rows:  # one row a call: a few short rows, no padding to get wrong
        input_ids = torch.tensor([ids], dtype=torch.long, device=model.device)
        logits = model(input_ids=input_ids).logits.float()[0]
        log_probs = logits[start - 1 : stop - 1].log_softmax(-1)
        target = input_ids[0, start:stop]
        out.append(float(-log_probs.gather(-1, target.unsqueeze(-1)).sum()))
    return out


def notes_of(score: Score) -> np.ndarray:
    """Every pitched note of `score` as rows (onset, pitch), sorted by onset."""
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    onsets = np.concatenate([p["time"] for p in parts]).astype(np.int64)
    pitches = np.concatenate([p["pitch"] for p in parts]).astype(np.int64)
    order = np.argsort(onsets, kind="stable")
    return np.stack([onsets[order], pitches[order]], axis=1)


def seam(notes: np.ndarray, start: int, line: int, end: int) -> dict:
    """The jumps (SEAM_MEASURES) from the bar [start, line) into the bar [line, end); None where a bar is silent."""
    before = notes[(notes[:, 0] >= start) & (notes[:, 0] < line)]
    after = notes[(notes[:, 0] >= line) & (notes[:, 0] < end)]
    density = float(abs(np.log2((len(after) + 1) / (len(before) + 1))))
    if not len(before) or not len(after):
        return {"top_voice_leap": None, "register_shift": None, "density_jump": density}
    last = before[before[:, 0] == before[-1, 0], 1].max()
    first = after[after[:, 0] == after[0, 0], 1].max()
    return {
        "top_voice_leap": float(abs(int(first) - int(last))),
        "register_shift": float(abs(after[:, 1].mean() - before[:, 1].mean())),
        "density_jump": density,
    }


def seams(score: Score, lines: list[int], first: int, stop: int) -> dict:
    """The entry and exit seams of the span of bars first..stop-1 in `score` (`lines`: each bar's start tick)."""
    notes = notes_of(score)
    return {
        "entry": seam(notes, lines[first - 1], lines[first], lines[first + 1]),
        "exit": seam(notes, lines[stop - 1], lines[stop], lines[stop + 1]),
    }


def outside_notes(score: Score, start: int, end: int) -> Counter:
    """The notes whose onsets lie outside [start, end), as a multiset of (program, drum, onset, duration, pitch,
    velocity): what must come back identical."""
    return Counter(
        (t.program, t.is_drum, n.time, n.duration, n.pitch, n.velocity)
        for t in score.tracks
        for n in t.notes
        if not start <= n.time < end
    )


def note_count(score: Score) -> int:
    return sum(len(t.notes) for t in score.tracks)


def evaluate_infill(
    model,
    tokenizer,
    composer_map,
    real: list[dict],
    composers: list[str],
    defaults: dict,
    *,
    pieces_per_composer: int,
    spans_per_piece: int,
    max_span_bars: int,
    seed: int,
) -> tuple[dict, dict]:
    """The infilling section of the report (see the module docstring) and the rewritten pieces to write as MIDI.
    `real`: the decoded held-out pieces (`loading.Context.real`)."""
    layout = RowLayout.for_tokenizer(tokenizer)
    entries, midi = [], {"infill": [], "infill_real": []}
    real_spans, other_spans = [], []
    tick = time.perf_counter()
    for k, p in enumerate(choose_pieces(real, composers, pieces_per_composer)):
        try:
            piece = piece_of(tokenizer, p["score"], p["source"], flag="--dataset_dir")
        except InputError as err:
            print(f"warning: {err}; left out of the infilling figures")
            continue
        rng = np.random.default_rng([seed, k])
        composer_id = composer_map.id_of(p["composer"])
        spans = draw_spans(piece.num_bars, spans_per_piece, max_span_bars, rng)
        # the reference's spans: another draw in the same piece (other places, same rules)
        others = draw_spans(piece.num_bars, spans_per_piece, max_span_bars, np.random.default_rng([seed + 1, k]))
        for j, (first, stop) in enumerate(spans):
            scored = span_likelihoods(model, layout, piece, composer_id, first, stop)
            if scored is None:
                continue  # a span the context cannot hold with a bar on each side: not scored, not rewritten
            span_ids, nlls = scored
            result = infill_span(
                model,
                tokenizer,
                composer_map,
                piece,
                (first + 1, stop),
                [p["composer"]],
                SamplingSettings(seed=seed + 1000 * k + j),
                defaults=defaults,
            )[0]
            entries.append(span_entry(tokenizer, p, piece, (first, stop), span_ids, nlls, result))
            name = f"{p['composer']}_{len(midi['infill'])}_bars_{first + 1}-{stop}"
            midi["infill"].append({"name": name, "score": result.score})
            midi["infill_real"].append({"name": name, "score": piece.score})
            real_spans.append(entries[-1]["metrics"]["real"])
        for first, stop in others:
            ids = np.concatenate(piece.bars[first:stop]).tolist()
            other_spans.append({"composer": p["composer"], **piece_metrics(decode_ids(tokenizer, ids))})
    return summarize(entries, real_spans, other_spans, time.perf_counter() - tick), midi


def span_likelihoods(
    model, layout: RowLayout, piece, composer_id: int, first: int, stop: int
) -> tuple[list[int], tuple[float, float, float]] | None:
    """The tokens of bars `first`..`stop` (0-based, stop exclusive) of `piece` and their NLL given the nearest bars
    before and after (the infill layout), the bars before only (a continuation), and the infill layout with no bars
    after; None when the model's context cannot hold the span with a bar on each side."""
    span_ids = np.concatenate(piece.bars[first:stop]).tolist()
    try:
        a, b = plan_context([len(bar) for bar in piece.bars], first, stop, context_length(model.config), len(span_ids))
    except InputError:
        return None
    before = np.concatenate(piece.bars[a:first]).tolist()
    after = np.concatenate(piece.bars[stop:b]).tolist()
    infill_row = layout.infill_prompt(composer_id, before, after) + span_ids
    prefix_row = layout.continuation_prompt(composer_id, before) + span_ids
    no_after_row = layout.infill_prompt(composer_id, before, []) + span_ids
    nlls = span_nll(
        model,
        [
            (infill_row, len(infill_row) - len(span_ids), len(infill_row)),
            (prefix_row, HEADER_TOKENS + len(before), len(prefix_row)),
            (no_after_row, len(no_after_row) - len(span_ids), len(no_after_row)),
        ],
        model.config.pad_token_id,
    )
    return span_ids, tuple(nlls)


def span_entry(tokenizer, p: dict, piece, bars: tuple[int, int], span_ids: list[int], nlls: tuple, result) -> dict:
    """One span's row of the report: the held-out piece `p` (decoded as `piece`), its bars `first`..`stop` (0-based,
    stop exclusive) holding `span_ids`, their NLL three ways (`span_likelihoods`) and `infill_span`'s `result`."""
    (first, stop), (infill_nll, prefix_nll, no_after_nll) = bars, nlls
    real_span = decode_ids(tokenizer, span_ids)
    notes = note_count(real_span)
    start, end = piece.lines[first], piece.lines[stop]
    new_span = decode_ids(tokenizer, result.ids)
    return {
        "composer": p["composer"],
        "source": p["source"],
        "bars": [first + 1, stop],
        "piece_bars": piece.num_bars,
        "context_bars": result.context_bars,
        "span_tokens": len(span_ids),
        "span_notes": notes,
        "infill_nll": infill_nll,
        "prefix_nll": prefix_nll,
        "no_after_nll": no_after_nll,
        "infill_nll_per_note": infill_nll / notes if notes else None,
        "prefix_nll_per_note": prefix_nll / notes if notes else None,
        "new_notes": note_count(new_span),
        "cut_bars": result.cut_bars,
        "syntax_error_rate": result.syntax_error_rate,
        "outside_notes": sum(outside_notes(piece.score, start, end).values()),
        "outside_identical": outside_notes(result.score, start, end) == outside_notes(piece.score, start, end),
        "seams": {
            "infilled": seams(result.score, piece.lines, first, stop),
            "real": seams(piece.score, piece.lines, first, stop),
        },
        "metrics": {
            "infilled": {"composer": p["composer"], **piece_metrics(new_span)},
            "real": {"composer": p["composer"], **piece_metrics(real_span)},
        },
    }


def summarize(entries: list[dict], real_spans: list[dict], other_spans: list[dict], seconds: float) -> dict:
    """Totals over the spans: NLL per note both ways and the reduction, the metric gaps, the seams, the checks."""
    notes = sum(e["span_notes"] for e in entries)
    infill_total = sum(e["infill_nll"] for e in entries)
    prefix_total = sum(e["prefix_nll"] for e in entries)
    no_after_total = sum(e["no_after_nll"] for e in entries)
    infilled = [e["metrics"]["infilled"] for e in entries]
    seam_rows = {}
    for side in ("entry", "exit"):
        for m in SEAM_MEASURES:
            got = [e["seams"]["infilled"][side][m] for e in entries]
            ref = [e["seams"]["real"][side][m] for e in entries]
            seam_rows[f"{side}_{m}"] = {"infilled": mean_or_none(got), "real": mean_or_none(ref)}
    return {
        "spans": len(entries),
        "pieces": len({e["source"] for e in entries}),
        "span_notes": notes,
        "infill_nll_per_note": infill_total / notes if notes else None,
        "prefix_nll_per_note": prefix_total / notes if notes else None,
        "nll_reduction": 1 - infill_total / prefix_total if prefix_total else None,
        "no_after_nll_per_note": no_after_total / notes if notes else None,
        "nll_reduction_from_the_bars_after": 1 - infill_total / no_after_total if no_after_total else None,
        "metric_gap": summary_distance(compare(infilled, real_spans))["mean_gap"] if entries else None,
        "real_spans_gap": summary_distance(compare(other_spans, real_spans))["mean_gap"]
        if entries and other_spans
        else None,
        "seams": seam_rows,
        "outside_identical_share": float(np.mean([e["outside_identical"] for e in entries])) if entries else None,
        "syntax_error_rate_max": max((e["syntax_error_rate"] for e in entries), default=None),
        "cut_bars": sum(e["cut_bars"] for e in entries),
        "seconds": seconds,
        "per_span": entries,
    }
