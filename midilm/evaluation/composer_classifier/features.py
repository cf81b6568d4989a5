"""A crop's features (`FEATURE_NAMES`), all key-blind, in quarter notes and relative pitch; crops of a piece."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from symusic import Score

from midilm.metrics.notes import DURATION_BIN_EDGES, bars, note_arrays

CROP_UNITS = ("notes", "bars")

# Krumhansl–Kessler key profiles (tonic first).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])

MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# |interval| bins of a melodic line: unison, 1..7 semitones, a sixth or seventh, the octave, beyond.
INTERVAL_BIN_EDGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 128)

MAX_CHORD = 6  # notes-per-onset histogram: 1..5 and "6 or more"

BEAT_PHASES = ("on the beat", "eighth off-beat", "sixteenth off-beat", "triplet", "other")


def _feature_names() -> list[str]:
    names = [f"pc_rel_{k}" for k in range(12)] + ["minor", "key_fit"]
    names += [f"chord_size_{k}" for k in range(1, MAX_CHORD + 1)] + ["chord_size_mean"]
    names += [f"harmonic_ic_{k}" for k in range(7)]
    for line in ("top", "bass"):
        names += [f"{line}_interval_{lo}" for lo in INTERVAL_BIN_EDGES[:-1]] + [f"{line}_up_share"]
    names += [f"duration_bin_{k}" for k in range(len(DURATION_BIN_EDGES) - 1)]
    names += [f"ioi_bin_{k}" for k in range(len(DURATION_BIN_EDGES) - 1)]
    names += [f"phase_{p.replace(' ', '_')}" for p in BEAT_PHASES] + ["downbeat_share"]
    names += ["log_notes_per_quarter", "log_onsets_per_quarter", "sounding_mean", "silent_share"]
    names += ["pitch_std", "pitch_range", "top_bass_distance"]
    return names


FEATURE_NAMES = tuple(_feature_names())

# Notes and crops -------------------------------------------------------------------------------


@dataclass
class Notes:
    """The pitched notes of a score (or a crop of it), in quarter notes, sorted by (onset, pitch)."""

    start: np.ndarray  # float64
    end: np.ndarray
    pitch: np.ndarray  # int64
    bar_start: np.ndarray  # start of each note's bar
    bar_index: np.ndarray  # int64, the bar each note starts in

    def __len__(self) -> int:
        return len(self.pitch)

    def take(self, index: np.ndarray | slice) -> Notes:
        return Notes(
            self.start[index], self.end[index], self.pitch[index], self.bar_start[index], self.bar_index[index]
        )

    @classmethod
    def of(cls, score: Score) -> Notes:
        arrays = note_arrays(score)
        tpq = float(score.ticks_per_quarter)
        starts = np.zeros(1, dtype=np.int64)
        if len(arrays["start"]):
            starts, _ = bars(score, int(max(arrays["end"].max(), arrays["start"].max() + 1)))
        index = np.maximum(np.searchsorted(starts, arrays["start"], side="right") - 1, 0)
        return cls(arrays["start"] / tpq, arrays["end"] / tpq, arrays["pitch"], starts[index] / tpq, index)


def crops(
    notes: Notes, length: int, unit: str = "notes", max_crops: int | None = None, rng: random.Random | None = None
) -> list[Notes]:
    """Non-overlapping crops of `length` notes (or bars) laid end to end from the start; a piece shorter
    than one crop is one crop of itself. With `max_crops`, that many of them, chosen by `rng` (else the first)."""
    if unit not in CROP_UNITS:
        raise ValueError(f"crop unit must be one of {CROP_UNITS}, got {unit!r}")
    if length < 1:
        raise ValueError(f"crop length must be at least 1, got {length}")
    if len(notes) == 0:
        return []
    if unit == "notes":
        bounds = [(i, min(i + length, len(notes))) for i in range(0, max(1, len(notes) - length + 1), length)]
    else:
        first_bar = np.searchsorted(notes.bar_index, np.arange(notes.bar_index[-1] + 2), side="left")
        num_bars = int(notes.bar_index[-1]) + 1
        bounds = [
            (int(first_bar[b]), int(first_bar[min(b + length, num_bars)]))
            for b in range(0, max(1, num_bars - length + 1), length)
        ]
        bounds = [(a, b) for a, b in bounds if b > a]
    if max_crops is not None and len(bounds) > max_crops:
        bounds = sorted((rng or random.Random(0)).sample(bounds, max_crops)) if rng is not None else bounds[:max_crops]
    return [notes.take(slice(a, b)) for a, b in bounds]


def typical_length(scores: Sequence[Score], unit: str = "notes") -> int:
    """The median length of some pieces (samples) in notes or bars: the crop length to judge them at."""
    if unit not in CROP_UNITS:
        raise ValueError(f"crop unit must be one of {CROP_UNITS}, got {unit!r}")
    lengths = []
    for score in scores:
        notes = Notes.of(score)
        lengths.append(len(notes) if unit == "notes" else (int(notes.bar_index[-1]) + 1 if len(notes) else 0))
    return max(1, int(np.median(lengths))) if lengths else 1


# Features --------------------------------------------------------------------------------------


def _histogram(values: np.ndarray, edges: Sequence[float], weights: np.ndarray | None = None) -> np.ndarray:
    counts = np.histogram(values, bins=edges, weights=weights)[0].astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)


# Row 12 * minor + tonic: the profile of that key laid over the 12 pitch classes, standardised, so that
# the correlation of a histogram with all 24 keys is one product.
KEY_PROFILES = _z(
    np.array([np.roll(profile, tonic) for profile in (MAJOR_PROFILE, MINOR_PROFILE) for tonic in range(12)])
)


def _key(pc_weights: np.ndarray) -> tuple[int, bool, float]:
    """(tonic, minor, correlation) of the best of the 24 Krumhansl–Kessler keys."""
    if pc_weights.sum() == 0 or np.all(pc_weights == pc_weights[0]):
        return 0, False, 0.0
    r = KEY_PROFILES @ _z(pc_weights) / 12
    best = int(np.argmax(r))
    return best % 12, best >= 12, float(r[best])


def features(notes: Notes) -> np.ndarray:
    """The `FEATURE_NAMES` vector of one crop (zeros for a crop without notes)."""
    out = np.zeros(len(FEATURE_NAMES))
    if len(notes) == 0:
        return out
    start, end, pitch = notes.start, np.maximum(notes.end, notes.start + 1e-3), notes.pitch
    parts = []
    # key-relative pitch classes
    pc_weights = np.bincount(pitch % 12, weights=end - start, minlength=12)
    tonic, minor, fit = _key(pc_weights)
    parts += [np.roll(pc_weights / pc_weights.sum(), -tonic), [float(minor), fit]]
    # onsets: chord sizes, harmonic interval classes, top line and bass
    onsets, first, sizes = np.unique(start, return_index=True, return_counts=True)
    parts += [np.bincount(np.minimum(sizes, MAX_CHORD) - 1, minlength=MAX_CHORD) / len(sizes), [sizes.mean()]]
    ics = []
    for d in range(1, int(sizes.max())):  # pairs of notes d apart in (onset, pitch) order that start together
        same = start[d:] == start[:-d]
        ic = (pitch[d:][same] - pitch[:-d][same]) % 12
        ics.append(np.minimum(ic, 12 - ic))
    ics = np.concatenate(ics) if ics else np.zeros(0, dtype=np.int64)
    parts.append(np.bincount(ics, minlength=7) / len(ics) if len(ics) else np.zeros(7))
    last = first + sizes - 1
    top, bass = pitch[last], pitch[first]
    for line in (top, bass):
        steps = np.diff(line)
        parts += [_histogram(np.abs(steps), INTERVAL_BIN_EDGES), [float((steps > 0).mean()) if len(steps) else 0.0]]
    # rhythm
    parts.append(_histogram(end - start, DURATION_BIN_EDGES))
    parts.append(
        _histogram(np.diff(onsets), DURATION_BIN_EDGES) if len(onsets) > 1 else np.zeros(len(DURATION_BIN_EDGES) - 1)
    )
    phase = np.mod(onsets, 1.0)
    on = np.isclose(phase, 0, atol=1e-3) | np.isclose(phase, 1, atol=1e-3)
    eighth = np.isclose(phase, 0.5, atol=1e-3)
    sixteenth = np.isclose(phase, 0.25, atol=1e-3) | np.isclose(phase, 0.75, atol=1e-3)
    triplet = np.isclose(phase, 1 / 3, atol=1e-2) | np.isclose(phase, 2 / 3, atol=1e-2)
    other = ~(on | eighth | sixteenth | triplet)
    parts.append(np.array([x.mean() for x in (on, eighth, sixteenth, triplet, other)]))
    onset_bar_start = notes.bar_start[first]
    parts.append([float(np.isclose(onsets, onset_bar_start, atol=1e-3).mean())])
    span = max(float(end.max() - start.min()), 1.0)
    # texture
    ends = np.sort(end)
    sounding = np.searchsorted(start, onsets, side="right") - np.searchsorted(ends, onsets, side="right")
    covered = _covered_length(start, end)
    parts.append(
        [math.log1p(len(pitch) / span), math.log1p(len(onsets) / span), float(sounding.mean()), 1.0 - covered / span]
    )
    parts.append([float(pitch.std()) / 12, float(pitch.max() - pitch.min()) / 12, float((top - bass).mean()) / 12])
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def _covered_length(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of the notes' [start, end) spans."""
    order = np.argsort(start)
    s, e = start[order], np.maximum.accumulate(end[order])
    gaps = np.maximum(s[1:] - e[:-1], 0.0)
    return float(e[-1] - s[0] - gaps.sum())
