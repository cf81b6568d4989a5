"""Piano-roll images and audio of a score, for sample folders and TensorBoard.

Audio comes from one of two SoundFont synthesizers, tried in this order:

- ``tinysoundfont`` (pip, self-contained C++ build of TinySoundFont). Its wheel declares ``pyaudio``,
  which it imports only for live playback, so install it with ``pip install --no-deps tinysoundfont``.
- the ``fluidsynth`` program (``apt-get install --no-install-recommends fluidsynth``).

Both are deterministic: the same score and soundfont give the same samples, and `write_wav` the same
bytes. symusic's own ``Synthesizer`` is not used: in symusic 0.6.0 its ``render`` cannot return its
buffer to Python (a nanobind type error with numpy 1.26 and 2.x alike).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import imsave
from symusic import Score

from midilm.core.outputs import write_file_atomic
from midilm.metrics.notes import PITCH_CLASS_NAMES, bars, tick_score

SOUNDFONT_ENV = "MIDILM_SOUNDFONT"
DEBIAN_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
BACKENDS = ("tinysoundfont", "fluidsynth")
# Controllers TinySoundFont acts on that change what a mono mix sounds like: volume and expression.
FORWARDED_CONTROLS = (7, 11)


class AudioUnavailable(RuntimeError):
    """No synthesizer or no soundfont here: callers log the message and go on without audio."""


# Piano roll ------------------------------------------------------------------------------------


def piano_roll_array(
    score: Score, *, title: str | None = None, size: tuple[int, int] = (1200, 480), dpi: int = 100
) -> np.ndarray:
    """The piano roll as an RGB image, (height, width, 3) uint8, for `SummaryWriter.add_image(..., dataformats="HWC")`.

    x is time in beats (quarter notes), y is MIDI pitch; one colour per track, opacity follows
    velocity; grey lines mark bars.
    """
    score = tick_score(score)
    tpq = score.ticks_per_quarter
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = _track_colours(len(score.tracks))
    low, high, end = 127, 0, 0
    for index, track in enumerate(score.tracks):
        notes = track.notes.numpy()
        if len(notes["time"]) == 0:
            continue
        start = notes["time"] / tpq
        stop = start + np.maximum(notes["duration"] / tpq, 1 / 32)
        pitch = notes["pitch"].astype(np.float64)
        corners = [start, pitch - 0.4, start, pitch + 0.4, stop, pitch + 0.4, stop, pitch - 0.4]
        boxes = np.stack(corners, axis=1).reshape(-1, 4, 2)
        face = np.tile(colours[index], (len(start), 1))
        face[:, 3] = 0.35 + 0.65 * notes["velocity"].astype(np.float64) / 127
        label = "drums" if track.is_drum else f"{track.name or 'track'} (program {track.program})"
        axes.add_collection(PolyCollection(boxes, facecolors=face, edgecolors="none", label=label, zorder=2))
        low, high, end = min(low, int(pitch.min())), max(high, int(pitch.max())), max(end, float(stop.max()))
    if end == 0:
        axes.text(0.5, 0.5, "no notes", transform=axes.transAxes, ha="center", va="center", color="grey")
        low, high, end = 60, 72, 4.0
    bar_starts, _ = bars(score, int(end * tpq))
    axes.vlines(bar_starts / tpq, low - 1.5, high + 1.5, colors="0.8", linewidth=0.6, zorder=1)
    axes.set_xlim(0, end)
    axes.set_ylim(low - 1.5, high + 1.5)
    ticks = list(range(12 * ((low + 11) // 12), high + 1, 12)) or sorted({low, high})  # the Cs, else the ends
    axes.set_yticks(ticks, [f"{PITCH_CLASS_NAMES[p % 12]}{p // 12 - 1}" for p in ticks])
    axes.grid(axis="y", color="0.92", linewidth=0.6, zorder=0)
    axes.set_xlabel("beats (quarter notes)")
    axes.set_ylabel("pitch")
    if title:
        axes.set_title(title)
    if sum(len(t.notes) > 0 for t in score.tracks) > 1:
        axes.legend(loc="upper right", fontsize="small", framealpha=0.8)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def _track_colours(count: int) -> np.ndarray:
    palette = colormaps["tab10"].colors
    return np.array([(*palette[i % len(palette)], 1.0) for i in range(max(count, 1))])


def piano_roll_png(
    score: Score,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    size: tuple[int, int] = (1200, 480),
    dpi: int = 100,
) -> bytes:
    """The piano roll (see `piano_roll_array`) as PNG bytes, also written to `path` when given."""
    buffer = io.BytesIO()
    imsave(buffer, piano_roll_array(score, title=title, size=size, dpi=dpi), format="png")
    data = buffer.getvalue()
    if path is not None:
        write_file_atomic(Path(path), data)
    return data


# Audio -----------------------------------------------------------------------------------------


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path | None:
    """The soundfont to render with: `explicit`, else $MIDILM_SOUNDFONT, else Debian's FluidR3_GM
    (package fluid-soundfont-gm), else the TimGM6mb.sf2 that pretty_midi ships; None if none is there.

    A path given explicitly or through the environment must exist (FileNotFoundError otherwise).
    """
    for given, origin in ((explicit, "soundfont"), (os.environ.get(SOUNDFONT_ENV) or None, SOUNDFONT_ENV)):
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{origin} {path} does not exist")
            return path
    if DEBIAN_SOUNDFONT.is_file():
        return DEBIAN_SOUNDFONT
    try:
        import pretty_midi
    except ImportError:
        return None
    bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return bundled if bundled.is_file() else None


def available_backends() -> list[str]:
    """The synthesizers usable here, in the order `render_audio(backend="auto")` tries them."""
    found = []
    try:
        import tinysoundfont  # noqa: F401  (is it installed?)

        found.append("tinysoundfont")
    except ImportError:
        pass
    if shutil.which("fluidsynth"):
        found.append("fluidsynth")
    return found


def render_audio(
    score: Score,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = 22050,
    *,
    backend: str = "auto",
    tail: float = 1.0,
) -> np.ndarray:
    """Synthesize `score` to mono float32 audio in [-1, 1]: the score's length plus `tail` seconds of release.

    `backend` is "auto" (the first of `available_backends()`), "tinysoundfont" or "fluidsynth".
    Raises `AudioUnavailable` when no synthesizer or no soundfont is found.
    """
    path = find_soundfont(soundfont)
    if path is None:
        raise AudioUnavailable(f"no soundfont: pass one or set ${SOUNDFONT_ENV}")
    available = available_backends()
    if backend == "auto":
        if not available:
            raise AudioUnavailable(
                "no MIDI synthesizer: `pip install --no-deps tinysoundfont` or `apt-get install fluidsynth`"
            )
        backend = available[0]
    elif backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, not {backend!r}")
    elif backend not in available:
        raise AudioUnavailable(f"synthesizer {backend} is not installed")
    seconds = score.to("second") if not str(score.ttype).endswith("Second") else score
    length = int(np.ceil((_end_seconds(seconds) + tail) * sample_rate))
    if backend == "tinysoundfont":
        audio = _render_tinysoundfont(seconds, path, sample_rate, length)
    else:
        audio = _render_fluidsynth(tick_score(score), path, sample_rate, length)
    peak = float(np.abs(audio).max(initial=0.0))
    return audio / peak if peak > 1.0 else audio  # many voices at once can sum past full scale


def _end_seconds(score: Score) -> float:
    ends = [0.0]
    for track in score.tracks:
        if len(track.notes):
            notes = track.notes.numpy()
            ends.append(float((notes["time"] + notes["duration"]).max()))
    return max(ends)


def _sustained_ends(start: np.ndarray, end: np.ndarray, track) -> np.ndarray:
    """Hold a note released under a sustain pedal until the pedal lifts (TinySoundFont has no CC 64)."""
    if len(track.pedals) == 0:
        return end
    pedals = track.pedals.numpy()
    order = np.argsort(pedals["time"])
    down, up = pedals["time"][order], (pedals["time"] + pedals["duration"])[order]
    index = np.searchsorted(down, end, side="right") - 1
    held = (index >= 0) & (end < up[np.maximum(index, 0)])
    return np.where(held, np.maximum(end, up[np.maximum(index, 0)]), end)


def _render_tinysoundfont(score: Score, soundfont: Path, sample_rate: int, length: int) -> np.ndarray:
    from tinysoundfont import _tinysoundfont as tsf

    try:
        synth = tsf.SoundFont(str(soundfont))
    except RuntimeError as err:
        raise AudioUnavailable(f"tinysoundfont cannot load {soundfont}: {err}") from err
    synth.set_output(tsf.OutputMode.Mono, sample_rate, 0.0)
    synth.set_max_voices(256)
    # (sample, order, action, channel, a, b): at one sample, controls, then releases, then new notes.
    events: list[tuple[int, int, str, int, float, float]] = []
    for channel, track in enumerate(score.tracks):  # TinySoundFont channels are unbounded: one per track
        try:
            synth.channel_set_preset_number(channel, track.program, track.is_drum)
        except RuntimeError:  # the soundfont lacks this program
            synth.channel_set_preset_number(channel, 0, False)
        for control in track.controls:
            if control.number in FORWARDED_CONTROLS:
                events.append((round(control.time * sample_rate), 0, "cc", channel, control.number, control.value))
        for bend in track.pitch_bends:
            events.append((round(bend.time * sample_rate), 0, "bend", channel, bend.value + 8192, 0))
        if len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        start = notes["time"].astype(np.float64)
        end = _sustained_ends(start, start + notes["duration"], track)
        for on, off, pitch, velocity in zip(
            np.round(start * sample_rate).astype(int),
            np.round(end * sample_rate).astype(int),
            notes["pitch"].tolist(),
            notes["velocity"].tolist(),
        ):
            events.append((int(on), 2, "on", channel, pitch, velocity / 127))
            events.append((int(off), 1, "off", channel, pitch, 0))
    events.sort(key=lambda e: (e[0], e[1], e[3], e[4]))

    audio = np.zeros(length, dtype=np.float32)
    done = 0
    for sample, _, action, channel, a, b in events:
        sample = min(sample, length)
        if sample > done:
            synth.render(audio[done:sample].view(np.uint8))
            done = sample
        if action == "on":
            synth.channel_note_on(channel, a, b)
        elif action == "off":
            synth.channel_note_off(channel, a)
        elif action == "cc":
            synth.channel_midi_control(channel, a, b)
        else:
            synth.channel_set_pitch_wheel(channel, a)
    if done < length:
        synth.render(audio[done:].view(np.uint8))
    return audio


def _render_fluidsynth(score: Score, soundfont: Path, sample_rate: int, length: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="midilm-render-") as folder:
        midi, raw = Path(folder) / "in.mid", Path(folder) / "out.raw"
        score.dump_midi(midi)
        command = [
            "fluidsynth", "-n", "-i", "-g", "1.0", "-r", str(sample_rate), "-T", "raw", "-O", "float", "-E", "little",
            "-F", str(raw), str(soundfont), str(midi),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        # fluidsynth exits 0 and renders silence when the soundfont does not load; it says so on stderr.
        errors = [line for line in done.stderr.splitlines() if "error" in line.lower() and "soundfont" in line.lower()]
        if done.returncode != 0 or errors or not raw.is_file():
            raise AudioUnavailable(f"fluidsynth failed: {(errors or [done.stderr.strip()])[0][:200]}")
        stereo = np.fromfile(raw, dtype="<f4")
    mono = stereo[: len(stereo) // 2 * 2].reshape(-1, 2).mean(axis=1)
    audio = np.zeros(length, dtype=np.float32)
    audio[: min(length, len(mono))] = mono[:length]
    return audio


def save_wav(audio: np.ndarray, path: str | os.PathLike, sample_rate: int) -> Path:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, through a temporary name and a rename."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    path = Path(path)
    write_file_atomic(path, buffer.getvalue())
    return path


def write_wav(
    score: Score,
    path: str | os.PathLike,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = 22050,
    **render_options,
) -> Path:
    """Render `score` (see `render_audio`) and save it as a 16-bit mono WAV at `path`."""
    return save_wav(render_audio(score, soundfont, sample_rate, **render_options), path, sample_rate)
