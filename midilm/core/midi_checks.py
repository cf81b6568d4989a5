"""Whether a MIDI file can be used: the checks the data step applies to every file, and that a
user's own MIDI input (a prompt, a melody) gets too, so both fail the same way."""

from __future__ import annotations

from pathlib import Path

from symusic import Score

from midilm.core.errors import InputError

# Resolutions and tempos outside these bounds come from broken writers; such files decode to nonsense.
MIN_TICKS_PER_QUARTER = 8
TEMPO_RANGE_QPM = (5.0, 1000.0)


def load_checked(path: Path) -> tuple[Score | None, str | None]:
    """A file's score, or why it can't be used. Never raises."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        score = Score(path)
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    except Exception:  # symusic raises plain RuntimeError/ValueError on anything malformed
        return None, "not a valid MIDI file"
    if score.ticks_per_quarter < MIN_TICKS_PER_QUARTER:
        return None, f"absurd resolution ({score.ticks_per_quarter} ticks per quarter)"
    if any(not TEMPO_RANGE_QPM[0] <= t.qpm <= TEMPO_RANGE_QPM[1] for t in score.tempos):
        return None, "absurd tempo (outside 5-1000 quarter notes per minute)"
    if score.note_num() == 0:
        return None, "no notes"
    return score, None


def check_file(path: Path) -> tuple[str | None, int]:
    """Why a file can't be used (None if it can), and its note count. Never raises."""
    score, reason = load_checked(path)
    return (reason, 0) if reason else (None, score.note_num())


def require_usable_midi(path: Path, flag: str) -> None:
    """A user's MIDI input (a prompt, a melody): `check_file`'s reasons as one InputError naming the flag."""
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such file")
    problem, _ = check_file(path)
    if problem:
        raise InputError(f"{flag} {path}: {problem}")
