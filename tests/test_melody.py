"""Melody extraction: marked tracks (by name, music21 part names), the skyline with held notes, chords, trimming."""

from __future__ import annotations

import random

import pytest
from conftest import make_piece
from symusic import Note, Score, Tempo, TimeSignature, Track

from midilm.core.melody import extract_melody, marked_tracks

TPQ = 480


def notes(track: Track) -> list[tuple[int, int, int]]:
    return [(n.time, n.duration, n.pitch) for n in track.notes]


def score_of(*tracks: Track) -> Score:
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, 90))
    score.tracks.extend(tracks)
    return score


def three_voices(seed: int, bars: int = 6) -> tuple[Score, list[tuple[int, int, int]]]:
    """A top voice with no rests (72-84) over an inner voice that moves under its held notes and a
    bass (both below 70), in unnamed tracks; the top voice jumps between two tracks every bar."""
    rng = random.Random(seed)
    upper_a, upper_b = Track(name="right hand", program=0), Track(name="strings", program=48)
    inner, bass = Track(name="inner", program=0), Track(name="bass", program=32)
    top, time = [], 0
    while time < bars * 4 * TPQ:
        length = rng.choice([TPQ // 2, TPQ, 2 * TPQ])
        pitch = rng.randint(72, 84)
        (upper_a if (time // (4 * TPQ)) % 2 == 0 else upper_b).notes.append(Note(time, length, pitch, 80))
        top.append((time, length, pitch))
        time += length
    for t in range(0, bars * 4 * TPQ, TPQ // 2):
        inner.notes.append(Note(t, TPQ // 2, rng.randint(60, 69), 70))  # onsets under held top notes
    for t in range(0, bars * 4 * TPQ, 2 * TPQ):
        bass.notes.append(Note(t, 2 * TPQ, rng.randint(40, 52), 70))
    return score_of(bass, inner, upper_a, upper_b), top


@pytest.mark.parametrize("seed", range(4))
def test_skyline_finds_the_known_top_voice(seed):
    score, top = three_voices(seed)
    melody = extract_melody(score)
    assert melody.source == "top voice of 4 tracks"
    (track,) = melody.score.tracks
    assert notes(track) == top
    assert melody.hidden_notes == score.note_num() - len(top)
    assert melody.score.ticks_per_quarter == TPQ and melody.score.tempos[0].qpm == pytest.approx(90)


def test_skyline_takes_a_lower_note_in_a_rest_and_trims_overlaps():
    high = Track(name="a", program=0)
    high.notes.extend([Note(0, 960, 76, 80), Note(1920, 480, 77, 80)])  # rest from 960 to 1920
    low = Track(name="b", program=0)
    low.notes.extend([Note(480, 960, 60, 80), Note(1440, 960, 62, 80), Note(1920, 480, 64, 80)])
    melody = extract_melody(score_of(high, low))
    # 60 starts under the held 76 (hidden); 62 starts in the rest (kept, cut where 77 starts); 64 is under 77
    assert notes(melody.score.tracks[0]) == [(0, 960, 76), (1440, 480, 62), (1920, 480, 77)]
    assert notes(extract_melody(score_of(high, low), trim=False).score.tracks[0]) == [
        (0, 960, 76),
        (1440, 960, 62),
        (1920, 480, 77),
    ]


def test_legato_overlap_is_not_a_chord():
    line = Track(name="a", program=0)
    line.notes.extend([Note(0, 500, 72, 80), Note(480, 500, 71, 80), Note(960, 480, 69, 80)])  # 20-tick overlaps
    other = Track(name="b", program=0)
    other.notes.append(Note(0, 1440, 48, 80))
    assert [p for _, _, p in notes(extract_melody(score_of(line, other)).score.tracks[0])] == [72, 71, 69]


def test_marked_melody_track_wins_over_higher_tracks():
    score = make_piece(3, bars=4)  # a track named "melody" plus block chords
    descant = Track(name="descant", program=73)
    descant.notes.extend(Note(t, 480, 100, 60) for t in range(0, 16 * 480, 480))
    score.tracks.append(descant)
    melody = extract_melody(score, trim=False)
    assert melody.source == "track 'melody'"
    assert notes(melody.score.tracks[0]) == sorted(notes(score.tracks[0]))
    assert melody.hidden_notes == 0


@pytest.mark.parametrize(
    "names, expected",
    [
        (["Piano", "Lead Vocal", "Bass"], [1]),
        (["Soprano", "Melody", "Alto"], [1]),
        (["Canto", "Quinto", "Alto", "Tenor", "Basso"], [0]),
        (["Soprano", "Alto", "Soprano", "Alto"], [0, 2]),  # a double choir: both sopranos
        (["Violin I", "Violin II", "Viola", "Cello"], []),
        (["leader_of_the_band", "melody_2"], [1]),
    ],
)
def test_marked_track_names(names, expected):
    tracks = []
    for name in names:
        track = Track(name=name, program=0)
        track.notes.append(Note(0, 480, 60, 80))
        tracks.append(track)
    assert marked_tracks(score_of(*tracks)) == expected


def test_empty_and_drum_tracks_are_never_marked():
    empty = Track(name="Melody", program=0)
    drums = Track(name="Lead drums", is_drum=True)
    drums.notes.append(Note(0, 120, 36, 100))
    real = Track(name="Soprano", program=0)
    real.notes.append(Note(0, 480, 72, 80))
    assert marked_tracks(score_of(empty, drums, real)) == [2]


def test_chords_in_the_marked_track_give_their_top_note():
    track = Track(name="melody", program=0)
    track.notes.extend(
        [
            Note(0, 960, 60, 80),
            Note(0, 960, 64, 80),
            Note(0, 960, 67, 80),
            Note(480, 480, 62, 80),
            Note(960, 480, 65, 80),
        ]
    )
    melody = extract_melody(score_of(track))
    # in a marked track a long note does not hide the notes that start under it: 62 is melody
    assert notes(melody.score.tracks[0]) == [(0, 480, 67), (480, 480, 62), (960, 480, 65)]
    assert melody.hidden_notes == 2


def test_music21_chorale_gives_its_soprano(bach_files):
    score = Score(bach_files[0].path)
    melody = extract_melody(score, trim=False)
    soprano = next(t for t in score.tracks if t.name == "Soprano" and len(t.notes))
    assert melody.source == "track 'Soprano'"  # music21 writes an empty second 'Soprano' track: skipped
    assert notes(melody.score.tracks[0]) == sorted(notes(soprano))
