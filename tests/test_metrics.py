"""midilm.metrics on small scores whose metric values can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

from midilm.metrics.compare import compare, distribution_distance, js_divergence, summary_scalars
from midilm.metrics.notes import DURATION_BIN_EDGES, pitch_sequence
from midilm.metrics.piece import SCALAR_METRICS, bar_windows, median_bars, piece_metrics

TPQ = 480
C_MAJOR = [60, 62, 64, 65, 67, 69, 71]


def make_score(notes, time_signature=(4, 4), drums=()) -> Score:
    """`notes` and `drums` are (start, duration, pitch) with times in quarter notes."""
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, *time_signature))
    for name, events, is_drum in (("melody", notes, False), ("drums", drums, True)):
        if events:
            track = Track(name=name, program=0, is_drum=is_drum)
            for start, duration, pitch in events:
                track.notes.append(Note(round(start * TPQ), round(duration * TPQ), pitch, 80))
            score.tracks.append(track)
    return score


def through_midi(score: Score, tmp_path) -> Score:
    path = tmp_path / "piece.mid"
    score.dump_midi(path)
    return Score(path)


def test_c_major_scale(tmp_path):
    score = through_midi(make_score([(i, 1, p) for i, p in enumerate(C_MAJOR)]), tmp_path)
    m = piece_metrics(score)
    assert m["pitch_class_entropy"] == pytest.approx(math.log2(7))
    assert m["scale_consistency"] == 1.0
    assert m["polyphony"] == 1.0
    assert m["pitch_range"] == 11
    assert m["empty_beat_rate"] == 0.0
    assert m["n_notes"] == 7 and m["n_bars"] == 2 and m["notes_per_bar"] == 3.5
    assert m["pitch_class_histogram"] == pytest.approx([1 / 7 * (pc in (0, 2, 4, 5, 7, 9, 11)) for pc in range(12)])
    quarter_bin = int(np.searchsorted(DURATION_BIN_EDGES, 1.0, side="right")) - 1
    assert m["duration_histogram"][quarter_bin] == 1.0 and sum(m["duration_histogram"]) == 1.0
    assert m["syntax_error_rate"] is None
    assert pitch_sequence(score).tolist() == C_MAJOR


def test_chord_progression():
    # I IV V I in C, one whole-note triad a bar: pitch classes C3 E2 G3 F1 A1 B1 D1 of 12 notes.
    chords = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]
    score = make_score([(4 * bar, 4, p) for bar, chord in enumerate(chords) for p in chord])
    m = piece_metrics(score)
    counts = np.array([3, 2, 3, 1, 1, 1, 1]) / 12
    assert m["pitch_class_entropy"] == pytest.approx(-(counts * np.log2(counts)).sum())
    assert m["scale_consistency"] == 1.0
    assert m["polyphony"] == 3.0
    assert m["groove_consistency"] == 1.0  # every bar has one onset, on its downbeat
    assert m["notes_per_bar"] == 3.0 and m["pitch_range"] == 14
    assert pitch_sequence(score).tolist()[:6] == [60, 64, 67, 65, 69, 72]


def test_harmonic_minor_and_chromatic_scale_consistency():
    a_harmonic_minor = [57, 59, 60, 62, 64, 65, 68]
    assert piece_metrics(make_score([(i, 1, p) for i, p in enumerate(a_harmonic_minor)]))["scale_consistency"] == 1.0
    chromatic = piece_metrics(make_score([(i, 1, 60 + i) for i in range(12)]))
    assert chromatic["scale_consistency"] == pytest.approx(7 / 12)
    assert chromatic["pitch_class_entropy"] == pytest.approx(math.log2(12))


def test_silent_bar():
    # 4/4: four quarters, a silent bar, four quarters.
    score = make_score([(i, 1, 60) for i in range(4)] + [(8 + i, 1, 62) for i in range(4)])
    m = piece_metrics(score)
    assert m["empty_beat_rate"] == pytest.approx(4 / 12)
    assert m["n_bars"] == 3 and m["notes_per_bar"] == pytest.approx(8 / 3)
    # 4 of 48 slots differ between each bar and the silent one.
    assert m["groove_consistency"] == pytest.approx(1 - 4 / 48)
    assert m["pitch_class_entropy"] == pytest.approx(1.0)


def test_groove_and_time_signature():
    quarters_then_eighths = [(i, 1, 60) for i in range(4)] + [(4 + i / 2, 0.5, 62) for i in range(8)]
    m = piece_metrics(make_score(quarters_then_eighths), positions_per_quarter=2)
    assert m["groove_consistency"] == pytest.approx(1 - 4 / 8)
    waltz = piece_metrics(make_score([(i, 1, 60 + i % 3) for i in range(9)], time_signature=(3, 4)))
    assert waltz["n_bars"] == 3 and waltz["notes_per_bar"] == 3.0 and waltz["groove_consistency"] == 1.0


def test_long_note_keeps_beats_full_and_drums_are_ignored():
    score = make_score([(0, 8, 60), (4, 1, 64)], drums=[(i, 0.5, 36) for i in range(8)])
    m = piece_metrics(score)
    assert m["n_notes"] == 2 and m["empty_beat_rate"] == 0.0
    assert m["polyphony"] == pytest.approx(1.5)  # 1 note at beat 0, 2 at beat 4


def test_empty_piece_and_quarter_time_unit():
    empty = piece_metrics(Score(TPQ), syntax_error_rate=0.25)
    assert empty["n_notes"] == 0 and empty["pitch_class_entropy"] is None and empty["syntax_error_rate"] == 0.25
    score = make_score([(i, 1, p) for i, p in enumerate(C_MAJOR)])
    assert piece_metrics(score.to("quarter")) == piece_metrics(score)


def test_compare_identical_and_different_sets():
    real = [piece_metrics(make_score([(i, 1, p + k) for i, p in enumerate(C_MAJOR)])) for k in range(4)]
    real += [piece_metrics(make_score([(4 * b, 4, p) for b in range(3) for p in (60, 64, 67 + b)]))]
    same = compare(real, real)
    for key in ("pitch_class_entropy", "polyphony", "pitch_range", "notes_per_bar"):
        assert same[key]["mean_gap"] == 0.0 and same[key]["kl_divergence"] == 0.0
        assert same[key]["overlap"] == pytest.approx(1.0)
        assert same[key]["generated_mean"] == same[key]["real_mean"]
    assert same["pitch_class_histogram"]["js_divergence"] == 0.0
    assert "syntax_error_rate" not in same  # nobody filled it in

    chromatic = [piece_metrics(make_score([(i / 2, 0.5, 48 + i + k) for i in range(24)])) for k in range(3)]
    other = compare(chromatic, real)
    for key in ("pitch_class_entropy", "scale_consistency", "pitch_range"):
        assert other[key]["mean_gap"] > 0 and other[key]["kl_divergence"] > 0 and other[key]["overlap"] < 0.5
    assert other["pitch_class_histogram"]["js_divergence"] > 0
    assert other["duration_histogram"]["js_divergence"] > 0
    scalars = summary_scalars(other)
    assert scalars["music/pitch_range/mean_gap"] == other["pitch_range"]["mean_gap"]

    with_errors = compare(
        [{**m, "syntax_error_rate": 0.1} for m in real], [{**m, "syntax_error_rate": 0.0} for m in real]
    )
    assert with_errors["syntax_error_rate"]["generated_mean"] == pytest.approx(0.1)


def test_bar_windows_cut_a_piece_into_passages_that_start_at_zero_under_its_time_signature():
    piece = make_score([(i, 1, 60 + i) for i in range(30)], time_signature=(3, 4))  # 10 bars of 3/4, rising
    windows = bar_windows(piece, 3)
    assert len(windows) == 3  # the tenth bar is a remainder, dropped
    assert [(w.start(), w.end()) for w in windows] == [(0, 9 * TPQ)] * 3
    assert [[n.pitch for n in w.tracks[0].notes] for w in windows] == [
        list(range(60 + 9 * k, 69 + 9 * k)) for k in range(3)
    ]
    assert all((w.time_signatures[0].numerator, w.time_signatures[0].time) == (3, 0) for w in windows)
    assert [piece_metrics(w)["n_bars"] for w in windows] == [3, 3, 3]
    assert bar_windows(piece, 10) == [piece] and len(bar_windows(piece, 1)) == 10
    with pytest.raises(ValueError, match="at least 1 bar"):
        bar_windows(piece, 0)
    assert median_bars([{"n_bars": 2}, {"n_bars": 4}, {"n_bars": 9}, {"n_bars": 0}]) == 4 and median_bars([]) == 1


def test_passages_as_long_as_the_samples_remove_the_length_bias():
    """Samples that are passages of the real pieces themselves: against whole pieces their pitch range
    looks far off (a whole piece spans more); against passages of their own length there is no gap."""
    real = [make_score([(i, 1, 48 + (i * 7 + k) % 36) for i in range(64)]) for k in range(3)]  # 16 bars each
    samples = [w for piece in real for w in bar_windows(piece, 4)]
    measured = [piece_metrics(w) for w in samples]
    whole = compare(measured, [piece_metrics(p) for p in real])
    passages = compare(measured, [piece_metrics(w) for p in real for w in bar_windows(p, median_bars(measured))])
    assert (
        whole["pitch_range"]["generated_mean"] < whole["pitch_range"]["real_mean"]
        and whole["pitch_range"]["mean_gap"] > 1
    )
    assert passages["pitch_range"]["mean_gap"] == 0.0 and passages["pitch_class_entropy"]["mean_gap"] == 0.0


def test_distances():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([1, 1], [2, 2]) == 0.0
    far = distribution_distance(np.array([0.0, 0.1, 0.2]), np.array([10.0, 10.1, 10.2]))
    assert far["overlap"] < 1e-6 and far["kl_divergence"] > 10
    near = distribution_distance(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5, 2.5]))
    assert 0.3 < near["overlap"] < 1.0


def test_scalar_metric_names_are_stable():
    assert set(SCALAR_METRICS) <= set(piece_metrics(make_score([(0, 1, 60)])))


def test_equal_values_are_no_spread_even_after_float_rounding():
    """Equal real values whose std rounds to 1e-17 (not 0): the gap is over the pooled std, not over the rounding."""
    real = [{"groove_consistency": 0.1 + 0.2} for _ in range(7)]
    assert np.std([p["groove_consistency"] for p in real]) != 0  # numpy's rounding, the case this guards
    gap = compare([{"groove_consistency": 0.5}, {"groove_consistency": 0.7}], real)["groove_consistency"]["mean_gap"]
    pooled = np.std([0.5, 0.7] + [0.1 + 0.2] * 7)
    assert gap == pytest.approx((0.6 - 0.3) / pooled)
