"""A score as numpy arrays: ticks, notes, pitches, bars; pitch-class names, scales and duration bins."""

from __future__ import annotations

import math

import numpy as np
from symusic import Score

# Bins centred on 1/8 ... 8 quarter notes, one octave of duration wide: a note falls into the bin of
# the power of two nearest to it on a log scale (triplet eighths with sixteenths, dotted quarters
# with halves).
DURATION_BIN_EDGES = tuple([0.0] + [2.0 ** (k + 0.5) for k in range(-3, 3)] + [math.inf])

# Pitch-class names, for key names and the piano roll's pitch axis.
PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MAJOR = (0, 2, 4, 5, 7, 9, 11)

HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)

# 24 rows x 12 pitch classes, 1 where the pitch class is in the scale.
SCALE_MASKS = np.array(
    [[(pc - root) % 12 in steps for pc in range(12)] for steps in (MAJOR, HARMONIC_MINOR) for root in range(12)]
)


def tick_score(score: Score) -> Score:
    """`score` with times in ticks (symusic also holds quarter-note and second timelines)."""
    return score if str(score.ttype).endswith("Tick") else score.to("tick")


def note_arrays(score: Score) -> dict[str, np.ndarray]:
    """Start, end, pitch and velocity (int64) of every pitched note, in ticks, sorted by (start, pitch)."""
    score = tick_score(score)
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return {"start": empty, "end": empty, "pitch": empty, "velocity": empty}
    start = np.concatenate([p["time"] for p in parts]).astype(np.int64)
    end = start + np.concatenate([p["duration"] for p in parts]).astype(np.int64)
    pitch = np.concatenate([p["pitch"] for p in parts]).astype(np.int64)
    velocity = np.concatenate([p["velocity"] for p in parts]).astype(np.int64)
    order = np.lexsort((pitch, start))
    return {"start": start[order], "end": end[order], "pitch": pitch[order], "velocity": velocity[order]}


def pitch_sequence(score: Score) -> np.ndarray:
    """Pitches in onset order (lowest first within a chord): the note sequence `longest_shared_run` compares."""
    return note_arrays(score)["pitch"]


def bars(score: Score, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start tick and length in ticks of every bar that starts before `end` (default: the score's end).

    Bars follow the time signatures (4/4 where there is none); a time signature that changes
    mid-bar starts a new bar, as `Score.get_downbeats` does.
    """
    score = tick_score(score)
    end = score.end() if end is None else end
    starts = np.asarray(score.get_downbeats(), dtype=np.int64)
    starts = starts[starts < end]
    if len(starts) == 0:
        starts = np.zeros(1, dtype=np.int64)
    lengths = np.diff(starts, append=starts[-1] + _bar_length_at(score, int(starts[-1])))
    return starts, lengths


def _bar_length_at(score: Score, tick: int) -> int:
    numerator, denominator = 4, 4
    for ts in score.time_signatures:
        if ts.time <= tick:
            numerator, denominator = ts.numerator, ts.denominator
    return max(1, round(numerator * 4 * score.ticks_per_quarter / denominator))
