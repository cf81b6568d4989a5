"""midilm.sampling.render: piano-roll images and synthesized audio of real MIDI."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from symusic import Note, Score, Tempo, Track

from midilm.sampling import render
from midilm.sampling.render import (
    AudioUnavailable,
    available_backends,
    find_soundfont,
    piano_roll_array,
    piano_roll_png,
    render_audio,
    write_wav,
)

TPQ = 480
BACKENDS = available_backends()
needs_synth = pytest.mark.skipif(
    not BACKENDS or find_soundfont() is None,
    reason="no synthesizer here: `pip install --no-deps tinysoundfont` (or apt-get install fluidsynth)",
)


def melody(tmp_path, pitches=(60, 62, 64, 65, 67, 69, 71, 72), qpm=120) -> Score:
    """Quarter notes at `qpm`, written to a MIDI file and read back."""
    score = Score(TPQ)
    score.tempos.append(Tempo(0, qpm))
    track = Track(name="piano", program=0)
    for i, pitch in enumerate(pitches):
        track.notes.append(Note(i * TPQ, TPQ, pitch, 90))
    score.tracks.append(track)
    path = tmp_path / "melody.mid"
    score.dump_midi(path)
    return Score(path)


def two_tracks(notes_per_track=20) -> Score:
    score = Score(TPQ)
    for index, program in enumerate((0, 40)):
        track = Track(name=f"voice{index}", program=program)
        for i in range(notes_per_track):
            track.notes.append(Note(i * TPQ // 2, TPQ // 2, 60 + 7 * index + i % 5, 100))
        score.tracks.append(track)
    return score


def coloured_pixels(image: np.ndarray) -> int:
    """Pixels far from grey: note boxes, not axes, text or bar lines."""
    image = image.astype(np.int16)
    return int(((image.max(axis=2) - image.min(axis=2)) > 60).sum())


def test_piano_roll_array(tmp_path):
    image = piano_roll_array(melody(tmp_path), title="C major", size=(640, 320))
    assert image.shape == (320, 640, 3) and image.dtype == np.uint8
    assert coloured_pixels(image) > 1000
    assert coloured_pixels(piano_roll_array(Score(TPQ), size=(320, 160))) == 0  # an empty score still draws


def test_piano_roll_png(tmp_path):
    path = tmp_path / "rolls" / "sample.png"
    data = piano_roll_png(two_tracks(), path, size=(800, 300))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == data
    assert struct.unpack(">II", data[16:24]) == (800, 300)  # IHDR width, height
    decoded = imread(path)
    assert decoded.shape[:2] == (300, 800) and coloured_pixels((decoded[:, :, :3] * 255).astype(np.uint8)) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["sample.png"]  # no temporary left behind


def test_find_soundfont(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        find_soundfont(tmp_path / "missing.sf2")
    given = tmp_path / "mine.sf2"
    given.write_bytes(b"RIFF")
    assert find_soundfont(given) == given
    monkeypatch.setenv(render.SOUNDFONT_ENV, str(given))
    assert find_soundfont() == given
    monkeypatch.setenv(render.SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(FileNotFoundError, match=render.SOUNDFONT_ENV):
        find_soundfont()
    monkeypatch.delenv(render.SOUNDFONT_ENV)


def test_default_soundfont_is_debians_else_pretty_midis_else_none(tmp_path, monkeypatch):
    """pretty_midi (a requirement) ships TimGM6mb.sf2, so a default always exists where midilm is installed;
    Debian's FluidR3_GM comes first where its package is installed; None only without both."""
    import sys

    import pretty_midi

    monkeypatch.delenv(render.SOUNDFONT_ENV, raising=False)
    bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    assert bundled.is_file()
    monkeypatch.setattr(render, "DEBIAN_SOUNDFONT", tmp_path / "not_installed.sf2")
    assert find_soundfont() == bundled
    debian = tmp_path / "FluidR3_GM.sf2"
    debian.write_bytes(b"RIFF")
    monkeypatch.setattr(render, "DEBIAN_SOUNDFONT", debian)
    assert find_soundfont() == debian
    monkeypatch.setattr(render, "DEBIAN_SOUNDFONT", tmp_path / "not_installed.sf2")
    monkeypatch.setitem(sys.modules, "pretty_midi", None)  # `import pretty_midi` raises ImportError
    assert find_soundfont() is None


def test_audio_unavailable(tmp_path, monkeypatch):
    score = melody(tmp_path)
    monkeypatch.setattr(render, "available_backends", list)
    with pytest.raises(AudioUnavailable, match="no MIDI synthesizer"):
        render_audio(score)
    with pytest.raises(AudioUnavailable, match="not installed"):
        render_audio(score, backend="tinysoundfont")
    with pytest.raises(ValueError):
        render_audio(score, backend="timidity")
    monkeypatch.setattr(render, "find_soundfont", lambda explicit=None: None)
    with pytest.raises(AudioUnavailable, match="no soundfont"):
        render_audio(score)


@needs_synth
@pytest.mark.parametrize("backend", BACKENDS)
def test_render_melody(tmp_path, backend):
    sample_rate = 16000
    audio = render_audio(melody(tmp_path), sample_rate=sample_rate, backend=backend, tail=0.5)
    # 8 quarter notes at 120 qpm last 4 s, plus the tail.
    assert audio.dtype == np.float32 and audio.shape == (math.ceil(4.5 * sample_rate),)
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio[: 4 * sample_rate] ** 2)) > 1e-3
    assert np.abs(audio[-sample_rate // 10 :]).max() < np.abs(audio).max() / 10  # released by the end


@needs_synth
@pytest.mark.parametrize("backend", BACKENDS)
def test_render_pitch(tmp_path, backend):
    sample_rate = 16000
    audio = render_audio(melody(tmp_path, pitches=(69, 69)), sample_rate=sample_rate, backend=backend)
    window = audio[sample_rate // 10 : sample_rate // 10 + 8192] * np.hanning(8192)
    peak = np.fft.rfftfreq(8192, 1 / sample_rate)[np.abs(np.fft.rfft(window)).argmax()]
    assert peak == pytest.approx(440, abs=3)  # A4


@needs_synth
@pytest.mark.parametrize("backend", BACKENDS)
def test_write_wav_is_deterministic(tmp_path, backend):
    score = two_tracks(8)
    first = write_wav(score, tmp_path / "a.wav", sample_rate=11025, backend=backend)
    second = write_wav(score, tmp_path / "b.wav", sample_rate=11025, backend=backend)
    assert first.read_bytes() == second.read_bytes()
    with wave.open(str(first)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 11025)
        assert wav.getnframes() == math.ceil((8 * 0.25 + 1.0) * 11025)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


@needs_synth
@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_soundfont_is_audio_unavailable(tmp_path, backend):
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00sfbk")
    with pytest.raises(AudioUnavailable):
        render_audio(melody(tmp_path), broken, backend=backend)
