"""The melody of a piece: the track marked as the melody, else the skyline (the top voice).

A track is marked by its name: `melody`, `vocal(s)`, `lead`, or the top voice of a choral or
madrigal score (`soprano`, and `canto`/`cantus`/`superius`, which music21's Monteverdi and
Palestrina scores use; music21 writes part names as MIDI track names). Where several tracks carry
the best name (a double choir's two sopranos), their top voice is taken.

Without a marked track, the skyline of all pitched tracks keeps, at each onset, the highest note
starting there unless a higher note is still sounding (a held soprano note over a moving alto). A
note that outlasts the onset by less than `tpq / 8` does not count as held: legato overlaps in
played MIDI are not chords. Within one marked track (or a file of one track) the top note of each
onset is kept: a chord gives its top note, and a long note does not hide the melody notes under it.
Each kept note is then cut where the next one starts, so the melody is one voice.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from symusic import Note, Score, Track

# Best first: a file with a `melody` track and a `soprano` track has its melody in the first.
MELODY_NAMES = ("melody", "melodie", "vocal", "vocals", "lead", "soprano", "canto", "cantus", "superius")
MELODY_TRACK_NAME = "melody"
HELD_TOLERANCE = 8  # a note must sound more than tpq / 8 past an onset to hide the notes below it


@dataclass
class Melody:
    """One piece's melody as a one-track Score with the piece's resolution, tempos and time signatures."""

    score: Score
    source: str  # where it came from: 'track "Soprano"' or 'top voice of 4 tracks'
    hidden_notes: int  # notes of the chosen tracks left out because a higher note sounded (chords)


def marked_tracks(score: Score) -> list[int]:
    """Indexes of the non-empty pitched tracks whose name marks the melody (best name only)."""
    best, found = len(MELODY_NAMES), []
    for index, track in enumerate(score.tracks):
        if track.is_drum or not len(track.notes):
            continue
        words = re.split(r"[^a-z]+", track.name.lower())
        rank = min((MELODY_NAMES.index(w) for w in words if w in MELODY_NAMES), default=len(MELODY_NAMES))
        if rank < best:
            best, found = rank, [index]
        elif rank == best and rank < len(MELODY_NAMES):
            found.append(index)
    return found


def top_voice(
    start: np.ndarray, end: np.ndarray, pitch: np.ndarray, tpq: int, hide_under_held: bool = True
) -> np.ndarray:
    """Indexes (in onset order) of the top voice: the highest note of each onset, left out where
    `hide_under_held` and a higher earlier note still sounds; see the module docstring."""
    tolerance = max(1, tpq // HELD_TOLERANCE)
    order = np.lexsort((-pitch, start))  # by onset, highest first
    kept, held = [], []  # held: max-heap of (-pitch, end) of notes that started before the onset
    i = 0
    while i < len(order):
        onset = start[order[i]]
        j = i
        while j < len(order) and start[order[j]] == onset:
            j += 1
        while held and (not hide_under_held or held[0][1] <= onset + tolerance):
            heapq.heappop(held)  # the highest earlier note has ended (or ends within the tolerance)
        candidate = order[i]
        if not held or -held[0][0] <= pitch[candidate]:
            kept.append(candidate)
        for k in order[i:j]:
            heapq.heappush(held, (-int(pitch[k]), int(end[k])))
        i = j
    return np.asarray(kept, dtype=np.int64)


def extract_melody(score: Score, trim: bool = True) -> Melody:
    """The melody of `score` (in ticks). `trim` cuts each note where the next starts (what the
    tokenizer sees); without it the kept notes keep their own durations (the given melody unchanged)."""
    if not str(score.ttype).endswith("Tick"):
        score = score.to("tick")
    marked = marked_tracks(score)
    pitched = [i for i, t in enumerate(score.tracks) if not t.is_drum and len(t.notes)]
    chosen = marked or pitched
    if marked:
        names = sorted({score.tracks[i].name for i in marked})
        source = f"track {', '.join(repr(n) for n in names)}" + (f" ({len(marked)} tracks)" if len(marked) > 1 else "")
    else:
        source = f"top voice of {len(pitched)} track{'s' * (len(pitched) != 1)}"
    melody = Score(score.ticks_per_quarter)
    melody.tempos = score.tempos.copy()
    melody.time_signatures = score.time_signatures.copy()
    melody.key_signatures = score.key_signatures.copy()
    if not chosen:
        melody.tracks.append(Track(name=MELODY_TRACK_NAME))
        return Melody(melody, source, 0)

    arrays = [score.tracks[i].notes.numpy() for i in chosen]
    start = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    end = start + np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
    velocity = np.concatenate([a["velocity"] for a in arrays]).astype(np.int64)
    programs = np.concatenate([[score.tracks[i].program] * len(a["time"]) for i, a in zip(chosen, arrays)]).astype(
        np.int64
    )
    kept = top_voice(start, end, pitch, score.ticks_per_quarter, hide_under_held=not marked and len(chosen) > 1)
    stops = end[kept].copy()
    if trim and len(kept) > 1:
        stops[:-1] = np.minimum(stops[:-1], start[kept[1:]])
    program = Counter(programs[kept].tolist()).most_common(1)[0][0]
    track = Track(name=MELODY_TRACK_NAME, program=int(program))
    for k, stop in zip(kept, stops):
        track.notes.append(Note(int(start[k]), max(1, int(stop - start[k])), int(pitch[k]), int(velocity[k])))
    melody.tracks.append(track)
    return Melody(melody, source, len(start) - len(kept))
