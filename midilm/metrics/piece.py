"""Per-piece music metrics of a score, and a piece cut into windows of bars.

Per piece (`piece_metrics`, a `symusic.Score` in ticks; drum tracks are left out):

- ``pitch_class_entropy``: Shannon entropy, in bits, of the 12-bin pitch-class histogram of note
  onsets, ``H = -sum_c p_c log2 p_c``. 0 for a single pitch class, log2(12) ~ 3.585 at most.
- ``scale_consistency``: largest share of notes whose pitch class lies in one scale, over the 12 major
  and 12 harmonic-minor scales (a natural minor holds the same pitch classes as its relative major,
  so the major scales already cover it). 1.0 when every note fits one scale.
- ``groove_consistency``: ``1 - mean_i d(g_i, g_{i+1})`` where ``g_i`` is the binary onset grid of
  bar i (``positions_per_quarter`` slots a quarter note) and d is the Hamming distance over the
  number of slots of the longer bar (Wu & Yang 2020). Needs two bars.
- ``empty_beat_rate``: share of beats, from 0 to the end of the last note, in which no note sounds.
  Beats are those of `Score.get_beats` (the time signature's beat: a quarter in 4/4, a dotted
  quarter in 6/8).
- ``polyphony``: mean number of notes sounding at each distinct onset time (a note sounds on
  ``[start, end)``; notes starting at that time count). 1.0 for a monophonic line.
- ``pitch_range``: highest minus lowest MIDI pitch, in semitones.
- ``notes_per_bar``: notes over bars, bars being those that start before the last note ends.
- ``vertical_seconds``: share of the pairs of notes that start together (every pair at one onset,
  any tracks) whose interval class is 1 or 2 (a minor or major second, a seventh or ninth apart);
  ``vertical_pairs`` counts those pairs, so a set's share is pooled over pairs
  (`pooled_vertical_seconds`). None for a piece where no two notes start together. Kept out of the
  mean gap (`DISTANCE_METRICS`), which it would change; the report gives it on its own, samples
  against real pieces.
- ``pitch_class_histogram`` (12 shares) and ``duration_histogram`` (shares over
  `DURATION_BIN_EDGES`, in beats = quarter notes) feed the histogram distances of `compare`.
- ``syntax_error_rate``: filled by the caller (midilm.sampling.grammar owns miditok's ``tokens_errors``).

A metric that a piece cannot define (no notes, a single bar) is None.

Real pieces are much longer than samples, and pitch range, pitch-class entropy and the like grow with
length; a composer may also have only a couple of held-out pieces, whose std is no unit at all. So the
report compares samples with real passages as long as they are: `bar_windows` cuts each real piece
into windows of the samples' median bar count (`median_bars`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from symusic import Score

from midilm.metrics.notes import DURATION_BIN_EDGES, SCALE_MASKS, bars, note_arrays, tick_score

SCALAR_METRICS = (
    "pitch_class_entropy",
    "scale_consistency",
    "groove_consistency",
    "empty_beat_rate",
    "polyphony",
    "pitch_range",
    "notes_per_bar",
    "syntax_error_rate",
)

HISTOGRAM_METRICS = ("pitch_class_histogram", "duration_histogram")


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _groove_consistency(start: np.ndarray, bar_starts: np.ndarray, bar_lengths: np.ndarray, tpq: int, res: int):
    if len(bar_starts) < 2:
        return None
    slots = np.maximum(1, np.round(bar_lengths * res / tpq)).astype(np.int64)
    grid = np.zeros((len(bar_starts), int(slots.max())), dtype=bool)
    bar = np.searchsorted(bar_starts, start, side="right") - 1
    position = np.round((start - bar_starts[bar]) * res / tpq).astype(np.int64)
    grid[bar, np.minimum(position, slots[bar] - 1)] = True
    distance = (grid[1:] != grid[:-1]).sum(axis=1) / np.maximum(slots[1:], slots[:-1])
    return float(1.0 - distance.mean())


def _empty_beat_rate(start: np.ndarray, end: np.ndarray, beats: np.ndarray, last: int):
    beats = beats[beats < last]
    if len(beats) == 0 or beats[0] != 0:
        beats = np.union1d([0], beats)
    first_beat = np.searchsorted(beats, start, side="right") - 1
    last_beat = np.searchsorted(beats, np.maximum(end - 1, start), side="right") - 1
    cover = np.zeros(len(beats) + 1, dtype=np.int64)
    np.add.at(cover, first_beat, 1)
    np.add.at(cover, last_beat + 1, -1)
    return float((np.cumsum(cover)[:-1] == 0).mean())


def _polyphony(start: np.ndarray, end: np.ndarray) -> float:
    onsets = np.unique(start)
    ends = np.sort(np.maximum(end, start + 1))  # a zero-length note still sounds at its onset
    sounding = np.searchsorted(start, onsets, side="right") - np.searchsorted(ends, onsets, side="right")
    return float(sounding.mean())


SECOND_INTERVAL_CLASSES = (1, 2)  # minor and major seconds (and their inversions and compounds)


def vertical_intervals(start: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Interval classes (0-6) of every pair of notes that start together; notes sorted by (start, pitch)."""
    out, d = [], 1
    while d < len(start):
        same = start[d:] == start[:-d]  # in (start, pitch) order, notes d apart at one onset
        if not same.any():
            break  # no onset holds more than d notes
        ic = (pitch[d:][same] - pitch[:-d][same]) % 12
        out.append(np.minimum(ic, 12 - ic))
        d += 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def vertical_seconds(score: Score) -> tuple[int, int]:
    """(pairs of notes that start together a second apart, all pairs of notes that start together)."""
    notes = note_arrays(score)
    ics = vertical_intervals(notes["start"], notes["pitch"])
    return int(np.isin(ics, SECOND_INTERVAL_CLASSES).sum()), len(ics)


def pooled_vertical_seconds(pieces: Sequence[dict]) -> float | None:
    """The share of vertical seconds over all pairs of a set of `piece_metrics` dicts (None: no pairs)."""
    pairs = sum(p.get("vertical_pairs") or 0 for p in pieces)
    seconds = sum((p.get("vertical_seconds") or 0.0) * (p.get("vertical_pairs") or 0) for p in pieces)
    return float(seconds / pairs) if pairs else None


def piece_metrics(
    score: Score, *, syntax_error_rate: float | None = None, positions_per_quarter: int = 12
) -> dict[str, float | int | list[float] | None]:
    """The per-piece metrics of the module docstring, as a JSON-ready dict.

    `positions_per_quarter` is the onset grid of groove consistency: 12 holds sixteenths and
    eighth/sixteenth triplets alike.
    """
    score = tick_score(score)
    tpq = score.ticks_per_quarter
    notes = note_arrays(score)
    start, end, pitch = notes["start"], notes["end"], notes["pitch"]
    result: dict[str, float | int | list[float] | None] = dict.fromkeys(SCALAR_METRICS)
    result["syntax_error_rate"] = None if syntax_error_rate is None else float(syntax_error_rate)
    result["n_notes"] = len(pitch)
    result["pitch_class_histogram"] = [0.0] * 12
    result["duration_histogram"] = [0.0] * (len(DURATION_BIN_EDGES) - 1)
    ics = vertical_intervals(start, pitch)
    result["vertical_pairs"] = len(ics)
    result["vertical_seconds"] = float(np.isin(ics, SECOND_INTERVAL_CLASSES).mean()) if len(ics) else None
    if len(pitch) == 0:
        result["n_bars"] = 0
        return result

    last = int(max(end.max(), start.max() + 1))
    bar_starts, bar_lengths = bars(score, last)
    pc_hist = np.bincount(pitch % 12, minlength=12) / len(pitch)
    duration_beats = (end - start) / tpq
    duration_hist = np.histogram(duration_beats, bins=DURATION_BIN_EDGES)[0] / len(pitch)

    result["n_bars"] = len(bar_starts)
    result["pitch_class_entropy"] = _entropy_bits(pc_hist)
    result["scale_consistency"] = float((SCALE_MASKS @ pc_hist).max())
    result["groove_consistency"] = _groove_consistency(start, bar_starts, bar_lengths, tpq, positions_per_quarter)
    result["empty_beat_rate"] = _empty_beat_rate(start, end, np.asarray(score.get_beats(), dtype=np.int64), last)
    result["polyphony"] = _polyphony(start, end)
    result["pitch_range"] = int(pitch.max() - pitch.min())
    result["notes_per_bar"] = len(pitch) / len(bar_starts)
    result["pitch_class_histogram"] = pc_hist.tolist()
    result["duration_histogram"] = duration_hist.tolist()
    return result


def bar_windows(score: Score, n_bars: int) -> list[Score]:
    """`score` cut into windows of `n_bars` bars laid end to end from its first bar, each moved to start
    at 0 under the time signature in force (a last, shorter remainder is dropped; so are windows
    without notes). A piece of at most `n_bars` bars is one window: itself."""
    if n_bars < 1:
        raise ValueError(f"a window holds at least 1 bar, got {n_bars}")
    score = tick_score(score)
    starts, lengths = bars(score)
    if len(starts) <= n_bars:
        return [score]
    edges = np.append(starts, starts[-1] + lengths[-1])
    windows = [
        score.clip(int(edges[i]), int(edges[i + n_bars]), clip_end=False).shift_time(-int(edges[i]))
        for i in range(0, len(starts) - n_bars + 1, n_bars)
    ]
    return [w for w in windows if w.note_num()] or [score]


def median_bars(pieces: Sequence[dict]) -> int:
    """The median bar count of measured pieces (`piece_metrics` dicts): the window length to cut real pieces to."""
    counts = [p["n_bars"] for p in pieces if p.get("n_bars")]
    return max(1, int(np.median(counts))) if counts else 1
