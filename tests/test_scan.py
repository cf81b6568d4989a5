"""midilm.data.scan: one read per file, sanity bounds, and a worker that dies without ending the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TOKENIZER_SETTINGS, make_piece
from symusic import Note, Score, Track

from midilm.data.scan import CRASH_HOOK_ENV, CRASHED, Bounds, Spill, bound_silence, read_spill, scan_files

STRAY_TICK = 2_147_482_647  # symusic writes it as the largest MIDI delta, 268,434,455 ticks


def with_notes_after(score: Score, tick: int, count: int) -> Score:
    track = Track(name="late", program=0)
    for k in range(count):
        track.notes.append(Note(tick + k * 240, 240, 60 + k % 12, 80))
    score.tracks.append(track)
    return score


def test_stray_notes_after_long_silence_are_cut(tmp_path):
    clean = make_piece(1, bars=8)
    path = tmp_path / "stray.mid"
    with_notes_after(make_piece(1, bars=8), STRAY_TICK, 1).dump_midi(path)
    score, reason, cut = bound_silence(Score(path), Bounds(max_silence_beats=64))
    assert reason is None and cut.startswith("cut 1 stray notes after ") and "beats of silence" in cut
    assert score.note_num() == clean.note_num() and score.end() == clean.end()


def test_music_after_long_silence_skips_the_file():
    score = with_notes_after(make_piece(2, bars=4), 480 * 200, 40)
    kept, reason, _ = bound_silence(score, Bounds(max_silence_beats=64))
    assert kept is None and "with 40 notes after it" in reason and "bound 64" in reason
    kept, reason, _ = bound_silence(score, Bounds(max_silence_beats=1000))
    assert reason is None and kept.note_num() == score.note_num()


def test_long_silence_before_the_first_note_skips_the_file():
    score = Score(480)
    score.tracks.append(Track(program=0))
    score.tracks[0].notes.append(Note(480 * 100, 480, 60, 80))
    _, reason, _ = bound_silence(score, Bounds(max_silence_beats=64))
    assert reason == "silence of 100 beats before the first note (bound 64)"


def test_events_long_after_the_last_note_are_cut():
    from symusic import Tempo

    score = make_piece(3, bars=4)
    score.tempos.append(Tempo(480 * 4000, 90))
    kept, reason, cut = bound_silence(score, Bounds(max_silence_beats=64))
    assert reason is None and cut.startswith("cut events") and kept.end() <= 480 * 17


def test_a_dying_worker_is_reported_and_the_rest_are_read(tmp_path, monkeypatch):
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"p{i}.mid")
        make_piece(i, bars=2).dump_midi(paths[-1])
    monkeypatch.setenv(CRASH_HOOK_ENV, "p17.mid")
    results = {r.index: r for r in scan_files(paths, TOKENIZER_SETTINGS, Bounds(), num_proc=2)}
    assert sorted(results) == list(range(40))
    assert results[17].reason == CRASHED
    assert all(r.reason is None and r.notes > 0 and len(r.ids) for i, r in results.items() if i != 17)
    # the same piece gives the same content hash wherever it is read
    assert len({r.digest for r in results.values() if r.digest}) == 39


def test_spill_round_trip(tmp_path):
    spill = Spill(tmp_path / "s.bin")
    a, b = np.array([1, 2, 3]), np.array([400, 5])
    places = [spill.append(a), spill.append(b)]
    spill.close()
    assert places == [(0, 3), (3, 2)]
    assert read_spill(tmp_path / "s.bin", 3, 2).tolist() == [400, 5] and read_spill(
        tmp_path / "s.bin", 0, 3
    ).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "name", ["Bach, Johann Sebastian", "composer_000", "C.P.E. Bach", "Dvořák", "Saint-Saëns", "Чайковский"]
)
def test_composer_tokens_keep_one_underscore_and_survive_a_reload(name, tmp_path):
    import miditok

    from midilm.core.tokenizer import build_tokenizer, composer_token

    token = composer_token(name)
    assert token.count("_") == 1
    tokenizer, composer_map = build_tokenizer(TOKENIZER_SETTINGS, [name])
    assert tokenizer[composer_map.token_ids[0]] == token
    tokenizer.save(tmp_path, filename="tokenizer.json")
    assert json.loads((tmp_path / "tokenizer.json").read_text())  # valid JSON with the name's letters
    assert miditok.REMI(params=tmp_path / "tokenizer.json").vocab[token] == composer_map.token_ids[0]
