"""One pass over every MIDI file: parse, check, bound, tokenize and hash it, in worker processes
that no single file can stop.

Each file is parsed once. The worker checks it, cuts stray notes after a long silence, encodes it
to base REMI ids (no BPE yet: BPE is learnt later, from a sample of these ids) and hashes those ids,
the key that finds duplicates and picks the split. The parent appends the ids to one flat file on
disk (`Spill`) and keeps a few numbers per file, so its memory does not grow with the corpus.

A file can kill the process that reads it (symusic #104: the interpreter dies on some malformed
files). A dead worker breaks a whole `ProcessPoolExecutor`, so the files that were in flight are
run again one at a time in a fresh one-worker pool: the file that breaks that pool is the culprit,
it is reported, and the run goes on.
"""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midilm.midi_checks import load_checked

# Test hook, read in the worker: a worker that reaches a file of this name exits at once, as the
# interpreter does when symusic crashes on a malformed file (tests/test_scan.py sets it).
CRASH_HOOK_ENV = "MIDILM_TEST_CRASH_ON"
# Files per task: large enough that task overhead is small against ~5 ms of tokenizing a file,
# small enough that a crash sends few files to the one-at-a-time retry.
CHUNK_FILES = 16
# A worker dies: these words name the reason in the report.
CRASHED = "the process reading it died (a crash in the MIDI parser or tokenizer)"
# How worker processes start (see worker_pool). Tests that inject faults by patching miditok in the
# parent set "fork", so that the workers inherit the patch.
START_METHOD = "spawn"
# ids are stored as uint16: base REMI vocabularies are a few hundred to a few thousand tokens.
ID_DTYPE = np.uint16


@dataclass(frozen=True)
class Bounds:
    """Sanity bounds for one file. Silence longer than `max_silence_beats` (quarter notes, all tracks
    silent) before the first note or inside the music gets the file skipped, except when few notes
    follow it (at most `stray_share` of the notes, or a single note): those are strays and are cut."""

    max_silence_beats: float = 64.0
    stray_share: float = 0.05


@dataclass
class Scanned:
    """What the worker found in one file: `reason` if it is unusable, else its base ids and figures;
    `cut` says what was removed from a kept file."""

    index: int
    reason: str | None = None
    cut: str | None = None
    ids: np.ndarray | None = None
    notes: int = 0
    bars: int = 0
    digest: str = ""


def bound_silence(score, bounds: Bounds):
    """(score, reason, cut): the score with stray notes after a long silence cut, or a reason to skip it."""
    tpq = score.ticks_per_quarter
    limit = bounds.max_silence_beats * tpq
    arrays = [t.notes.numpy() for t in score.tracks if len(t.notes)]
    # int64: a note at tick 2**31 - 1 plus its duration overflows symusic's int32 ticks
    starts = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    ends = starts + np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    if starts[0] > limit:
        return (
            None,
            f"silence of {starts[0] / tpq:.0f} beats before the first note (bound {bounds.max_silence_beats:g})",
            None,
        )
    reach = np.maximum.accumulate(ends)
    gaps = starts[1:] - reach[:-1]
    long = np.flatnonzero(gaps > limit)
    if len(long):
        first_after = int(long[0]) + 1
        after = len(starts) - first_after
        gap, at = gaps[long[0]] / tpq, reach[first_after - 1] / tpq
        if after > max(1, bounds.stray_share * len(starts)):
            return (
                None,
                (
                    f"silence of {gap:.0f} beats at beat {at:.0f} with {after} notes after it (bound "
                    f"{bounds.max_silence_beats:g})"
                ),
                None,
            )
        end = int(reach[first_after - 1])
        return (
            score.clip(0, end + 1),
            None,
            f"cut {after} stray notes after {gap:.0f} beats of silence at beat {at:.0f}",
        )
    end = int(reach[-1])
    if score.end() > end + limit:
        # tempo, time-signature or controller events long after the last note would tokenize to empty bars
        return score.clip(0, end + 1), None, f"cut events {(score.end() - end) / tpq:.0f} beats after the last note"
    return score, None, None


def load_bounded(path: Path, bounds: Bounds):
    """(score, reason, cut) of one file: the checks of `midilm.midi_checks.load_checked`, then `bound_silence`."""
    score, reason = load_checked(path)
    if reason:
        return None, reason, None
    return bound_silence(score, bounds)


_worker: dict = {}


def _light_start(initializer: str | None = None, initargs: tuple = ()) -> None:
    # miditok imports torch only for its optional `pytorch_data` module (and skips it when the import
    # fails); a worker never needs it, and it costs ~180 MB and ~2 s per process. The initializer comes
    # as a name, imported only now: unpickling a function imports its module, which may import miditok.
    if "torch" not in sys.modules:
        sys.modules["torch"] = None
    if initializer:
        module, name = initializer.split(":")
        getattr(importlib.import_module(module), name)(*initargs)


def worker_pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """Worker processes for the data step: spawned, not forked, so each holds what it imports (numpy,
    symusic, miditok: ~100 MB) rather than a copy-on-write image of the parent, whose pages count in
    every child's resident memory and become private as the interpreter touches them."""
    name = f"{initializer.__module__}:{initializer.__qualname__}" if initializer else None
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(START_METHOD),
        initializer=_light_start,
        initargs=(name, initargs),
    )


def _init_worker(settings: dict) -> None:
    from midilm.tokenizer import (
        build_tokenizer,
    )  # here: a spawned worker imports this module first, and stays light until it encodes

    tokenizer, _ = build_tokenizer(settings, [], infill_markers=False)  # ids (split hashes) as before the markers
    base = [tokenizer[i] for i in range(len(tokenizer))]
    _worker.update(
        tokenizer=tokenizer,
        is_note=np.array([t.startswith(("Pitch_", "PitchDrum_")) for t in base]),
        is_bar=np.array([t.startswith("Bar_") for t in base]),
    )


def scan_one(index: int, path: Path, bounds: Bounds) -> Scanned:
    """Everything the data step needs from one file. Never raises (the worker may still die)."""
    if os.environ.get(CRASH_HOOK_ENV) and Path(path).name == os.environ[CRASH_HOOK_ENV]:
        os._exit(1)
    score, reason, cut = load_bounded(Path(path), bounds)
    if reason:
        return Scanned(index, reason=reason)
    try:
        ids = np.asarray(_worker["tokenizer"].encode(score).ids, dtype=np.int64)
    except Exception as err:  # miditok raises many kinds on odd input; one file must not stop the run
        return Scanned(index, reason=f"tokenizer failed: {type(err).__name__}: {err}"[:300])
    if not len(ids):
        return Scanned(index, reason="no tokens (the tokenizer encoded nothing)")
    notes = int(_worker["is_note"][ids].sum())
    if not notes:
        low, high = _worker["tokenizer"].config.pitch_range
        return Scanned(index, reason=f"no notes inside the tokenizer's pitch range ({low}-{high - 1})")
    ids = ids.astype(ID_DTYPE)
    digest = hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()
    return Scanned(index, cut=cut, ids=ids, notes=notes, bars=int(_worker["is_bar"][ids].sum()), digest=digest)


def _scan_chunk(jobs: list[tuple[int, str]], bounds: Bounds) -> list[Scanned]:
    return [scan_one(i, Path(p), bounds) for i, p in jobs]


def scan_files(paths: list[Path], settings: dict, bounds: Bounds, num_proc: int) -> Iterator[Scanned]:
    """One `Scanned` per path, in the order they finish; at most 2 tasks per worker in flight, so
    results never pile up in memory."""
    pending = deque(
        [
            [(i, str(p)) for i, p in enumerate(paths[s : s + CHUNK_FILES], start=s)]
            for s in range(0, len(paths), CHUNK_FILES)
        ]
    )
    suspects: deque[tuple[int, str]] = deque()
    workers = max(1, num_proc)
    while pending or suspects:
        if suspects:
            yield from _run_suspects(suspects, settings, bounds)
            continue
        pool = worker_pool(workers, _init_worker, (settings,))
        in_flight: dict = {}
        current: list = []  # the task being submitted or read when the pool broke
        try:
            while pending or in_flight:
                while pending and len(in_flight) < 2 * workers:
                    current = pending.popleft()
                    in_flight[pool.submit(_scan_chunk, current, bounds)] = current
                    current = []
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    current = in_flight.pop(future)
                    results = future.result()
                    current = []
                    yield from results
        except BrokenProcessPool:
            # every unfinished task is suspect; those that did finish still count
            suspects.extend(current)
            for future, chunk in in_flight.items():
                if future.done() and not future.exception():
                    yield from future.result()
                else:
                    suspects.extend(chunk)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_suspects(suspects: deque, settings: dict, bounds: Bounds) -> Iterator[Scanned]:
    """Files that were in flight when a worker died, each alone: a broken pool names its file."""
    pool = worker_pool(1, _init_worker, (settings,))
    try:
        while suspects:
            index, path = suspects.popleft()
            try:
                yield from pool.submit(_scan_chunk, [(index, path)], bounds).result()
            except BrokenProcessPool:
                yield Scanned(index, reason=CRASHED)
                pool.shutdown(wait=True)
                pool = worker_pool(1, _init_worker, (settings,))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Spill:
    """Base ids of every kept file, end to end in one file on disk; a file is (offset, length)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("wb")
        self.size = 0

    def append(self, ids: np.ndarray) -> tuple[int, int]:
        offset = self.size
        self._file.write(np.ascontiguousarray(ids, dtype=ID_DTYPE).tobytes())
        self.size += len(ids)
        return offset, len(ids)

    def close(self) -> None:
        self._file.close()


def read_spill(path: str | Path, offset: int, length: int) -> np.ndarray:
    return np.fromfile(path, dtype=ID_DTYPE, count=length, offset=offset * np.dtype(ID_DTYPE).itemsize).astype(np.int64)


def scan_vocabulary(settings: dict) -> list[str]:
    """The tokens of the vocabulary the workers encode with (no composer tokens: those are known only
    after the scan), to map their ids onto the final tokenizer's."""
    from midilm.tokenizer import (
        build_tokenizer,
    )  # here: a spawned worker imports this module first, and stays light until it encodes

    tokenizer, _ = build_tokenizer(settings, [], infill_markers=False)  # ids (split hashes) as before the markers
    return [tokenizer[i] for i in range(len(tokenizer))]
