"""Vertical seconds (pairs of notes that start together a second apart) against a hand count, in
midilm.metrics.piece and in the `music_metrics` evaluate module."""

from __future__ import annotations

import pytest
from symusic import Note, Score, TimeSignature, Track

from midilm.metrics.piece import piece_metrics, pooled_vertical_seconds, vertical_seconds

TPQ = 480


def score_of(tracks: list[list[tuple[float, int]]]) -> Score:
    """Tracks of (onset in quarters, pitch), each note a quarter long."""
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    for k, notes in enumerate(tracks):
        track = Track(name=f"voice{k}", program=0)
        for start, pitch in notes:
            track.notes.append(Note(round(start * TPQ), TPQ, pitch, 80))
        score.tracks.append(track)
    return score


# Onset 0: C4 D4 G4 (across two tracks) -> pairs C-D (ic 2, a second), C-G (ic 5), D-G (ic 5): 1 of 3.
# Onset 1: E4 F5 -> ic 1 (a minor ninth counts as a second): 1 of 1.
# Onset 2: C4 alone -> no pair.  Onset 3: C4 E4 G4 C5 -> 6 pairs: ics 4, 5, 0, 3, 4, 5: no second.
# Onset 3.5 (second track): B3 C4 -> ic 1: 1 of 1.  Hand count: 3 seconds among 11 pairs.
SMALL = [
    [(0, 60), (0, 62), (1, 64), (2, 60), (3, 60), (3, 64), (3, 67), (3, 72)],
    [(0, 67), (1, 77), (3.5, 59), (3.5, 60)],
]


def test_vertical_seconds_agree_with_a_hand_count():
    score = score_of(SMALL)
    assert vertical_seconds(score) == (3, 11)
    metrics = piece_metrics(score)
    assert metrics["vertical_pairs"] == 11
    assert metrics["vertical_seconds"] == pytest.approx(3 / 11)


def test_a_line_without_chords_has_no_share_and_pooling_weights_by_pairs():
    line = piece_metrics(score_of([[(0, 60), (1, 62), (2, 64)]]))
    assert line["vertical_pairs"] == 0 and line["vertical_seconds"] is None
    cluster = piece_metrics(score_of([[(0, 60), (0, 61)]]))  # 1 of 1
    assert pooled_vertical_seconds([piece_metrics(score_of(SMALL)), cluster, line]) == pytest.approx(4 / 12)
    assert pooled_vertical_seconds([line]) is None


def test_music_metrics_module_reports_vertical_seconds_against_real(tmp_path):
    evaluate = pytest.importorskip("evaluate")
    from midilm.evaluate_modules import path

    sample, real = tmp_path / "sample.mid", tmp_path / "real.mid"
    score_of(SMALL).dump_midi(sample)
    score_of([[(0, 60), (0, 64), (0, 67), (1, 62), (1, 65)]]).dump_midi(real)  # 4 pairs, no second
    result = evaluate.load(path("music_metrics"), keep_in_memory=True).compute(
        predictions=[str(sample)], real=[str(real)]
    )
    assert result["vertical_seconds"]["predictions"] == pytest.approx(3 / 11)
    assert result["vertical_seconds"]["real"] == 0.0
    assert result["per_piece"][0]["vertical_pairs"] == 11
