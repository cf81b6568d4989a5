"""How an accompaniment fits its melody: onset-and-pitch matches, melody adherence, the melody's key, harmonic
fit."""

from __future__ import annotations

import numpy as np
from symusic import Score

from midilm.metrics.notes import PITCH_CLASS_NAMES, SCALE_MASKS, note_arrays, tick_score

#
# A generated full piece is judged against the melody it was given (both Scores; their resolutions
# may differ, so times are compared in quarter notes):
#
# - ``melody_adherence``: share of melody notes that the full piece plays at the same pitch and
#   onset (within `onset_tolerance` quarter notes: half the tokenizer's finest step by default, as
#   a played melody is quantized to that grid before the model sees it).
# - ``harmonic_fit``: share of accompaniment note-time (the full piece's notes other than those that
#   double a melody note) whose pitch class is sounding in the melody during that beat, or belongs
#   to the melody's key (the major or harmonic-minor scale that holds most of its note-time).
#   ``beat_fit`` and ``key_fit`` are the two halves alone.
#
# The same figures for a real piece (its own accompaniment under its extracted melody:
# `accompaniment_metrics(extract_melody(score).score, score)`) give the reference; there
# melody adherence is 1 by construction.

DEFAULT_ONSET_TOLERANCE = 1 / 16  # quarter notes: half a 32nd, the finest REMI grid (TOKENIZER_DEFAULTS' beat_res)


def _notes_in_quarters(score: Score) -> dict[str, np.ndarray]:
    score = tick_score(score)
    notes = note_arrays(score)
    tpq = score.ticks_per_quarter
    return {"start": notes["start"] / tpq, "end": notes["end"] / tpq, "pitch": notes["pitch"]}


def onset_pitch_matches(
    ref_start: np.ndarray, ref_pitch: np.ndarray, start: np.ndarray, pitch: np.ndarray, tolerance: float
) -> np.ndarray:
    """For each (start, pitch): whether a reference note has that pitch and an onset within `tolerance`."""
    if len(ref_start) == 0 or len(start) == 0:
        return np.zeros(len(start), dtype=bool)
    span = 4.0 * (max(ref_start.max(), start.max()) + tolerance + 1.0)  # keys of two pitches never meet
    ref_key = np.sort(ref_pitch * span + ref_start)
    key = pitch * span + start
    first = np.searchsorted(ref_key, key - tolerance - 1e-9, side="left")
    found = first < len(ref_key)
    found[found] &= ref_key[first[found]] <= key[found] + tolerance + 1e-9
    return found


def melody_notes_matched(
    melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """(for each melody note: found in `full`; for each note of `full`: it doubles a melody note),
    notes in `note_arrays` order."""
    mel, gen = _notes_in_quarters(melody), _notes_in_quarters(full)
    return (
        onset_pitch_matches(gen["start"], gen["pitch"], mel["start"], mel["pitch"], onset_tolerance),
        onset_pitch_matches(mel["start"], mel["pitch"], gen["start"], gen["pitch"], onset_tolerance),
    )


def melody_adherence(melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> float | None:
    """Share of the melody's notes found in `full` at the same pitch and onset; None without melody notes."""
    found, _ = melody_notes_matched(melody, full, onset_tolerance)
    return float(found.mean()) if len(found) else None


def melody_key(melody: Score) -> tuple[str, np.ndarray]:
    """The melody's key ("G major", "E harmonic minor") and its 12 pitch classes as booleans, from the
    note-time of each pitch class (the best of `SCALE_MASKS`)."""
    mel = _notes_in_quarters(melody)
    weights = np.bincount(mel["pitch"] % 12, weights=mel["end"] - mel["start"], minlength=12)
    best = int(np.argmax(SCALE_MASKS @ weights))
    mode = "major" if best < 12 else "harmonic minor"
    return f"{PITCH_CLASS_NAMES[best % 12]} {mode}", SCALE_MASKS[best].astype(bool)


def _beat_grid(melody: Score, end: float) -> np.ndarray:
    """Beat times of the melody, in quarter notes, continued at the last spacing to `end`."""
    score = tick_score(melody)
    beats = np.asarray(score.get_beats(), dtype=np.float64) / score.ticks_per_quarter
    if len(beats) == 0 or beats[0] > 0:
        beats = np.concatenate([[0.0], beats])
    step = beats[-1] - beats[-2] if len(beats) > 1 else 1.0
    if beats[-1] < end:
        beats = np.concatenate([beats, beats[-1] + step * np.arange(1, int(np.ceil((end - beats[-1]) / step)) + 1)])
    return np.concatenate([beats, [beats[-1] + step]])


def accompaniment_metrics(
    melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE
) -> dict[str, float | int | str | None]:
    """Melody adherence, harmonic fit (with beat fit and key fit), the melody's key and note counts;
    see the comment above. A figure that cannot be defined (no melody notes, no accompaniment) is None."""
    mel, gen = _notes_in_quarters(melody), _notes_in_quarters(full)
    found, doubles = melody_notes_matched(melody, full, onset_tolerance)
    result: dict[str, float | int | str | None] = {
        "melody_adherence": float(found.mean()) if len(found) else None,
        "harmonic_fit": None,
        "beat_fit": None,
        "key_fit": None,
        "key": None,
        "melody_notes": len(found),
        "accompaniment_notes": int((~doubles).sum()),
    }
    if len(found) == 0:
        return result
    key_name, key_pcs = melody_key(melody)
    result["key"] = key_name
    start, end, pitch = gen["start"][~doubles], gen["end"][~doubles], gen["pitch"][~doubles]
    if len(start) == 0:
        return result
    beats = _beat_grid(melody, float(max(end.max(), mel["end"].max())))
    # [beats, 12]: the pitch classes the melody sounds during each beat
    sounding = np.zeros((len(beats) - 1, 12), dtype=bool)
    for s, e, p in zip(mel["start"], np.maximum(mel["end"], mel["start"] + 1e-6), mel["pitch"]):
        first, last = np.searchsorted(beats, s, side="right") - 1, np.searchsorted(beats, e, side="left") - 1
        sounding[first : last + 1, p % 12] = True
    total = in_beat = in_key = either = 0.0
    for s, e, p in zip(start, np.maximum(end, start + 1e-6), pitch):
        first, last = np.searchsorted(beats, s, side="right") - 1, np.searchsorted(beats, e, side="left") - 1
        for j in range(first, last + 1):
            overlap = min(e, beats[j + 1]) - max(s, beats[j])
            if overlap <= 0:
                continue
            beat_ok, key_ok = sounding[j, p % 12], key_pcs[p % 12]
            total += overlap
            in_beat += overlap * beat_ok
            in_key += overlap * key_ok
            either += overlap * (beat_ok or key_ok)
    if total > 0:
        result.update(
            harmonic_fit=float(either / total), beat_fit=float(in_beat / total), key_fit=float(in_key / total)
        )
    return result


def harmonic_fit(melody: Score, full: Score, onset_tolerance: float = DEFAULT_ONSET_TOLERANCE) -> float | None:
    """Share of accompaniment note-time in the pitch classes of the melody's beat or key; None when
    there is no melody or no accompaniment. `accompaniment_metrics` gives its two halves too."""
    return accompaniment_metrics(melody, full, onset_tolerance)["harmonic_fit"]
