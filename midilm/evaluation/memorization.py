"""Memorization: the longest passage a piece shares with one training piece, in any transposition.

A piece is read as the pitches of its notes in onset order, lowest first within an onset (the order
of `midilm.metrics.notes.pitch_sequence`), and compared by the intervals between successive pitches. A
training piece transposed by any amount therefore matches as well as the original does, and so do
prepare_dataset.py's augmented copies, which are transpositions of it. The run is counted in
intervals: a shared run of k intervals is a passage of k + 1 notes.

`MemorizationIndex` is built once per evaluation, from the token ids of the training split's
original pieces, streamed from Arrow in batches (`build_index`, or `midilm.evaluation.data.scan_training`)
without decoding a Score: `PitchReader`
reads pitches off the base REMI tokens behind every vocabulary item (`Bar`/`Position` start an
onset, a `Pitch` followed by its `Duration` is a note). The index is a suffix array over all
training intervals laid end to end. A query is one vectorised binary search per note of the piece
(O(n log N) for n notes against N training notes), and the answer is exact, with no hashing.
Memory is the index alone: N bytes of intervals plus 4N bytes of suffix array (about 40N while
it is built).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from midilm.core.tokenizer import vocab_base_tokens

ONSET, DURATION, OTHER = -1, -2, -3  # event codes beside pitches 0..127
SEPARATOR = 0  # between pieces in the index; interval codes are 1..255, so no match runs across it
PAD = -1  # after a query: below every index code, so a query that ends sorts before its extensions


class PitchReader:
    """Pitches in onset order from token ids, for one tokenizer (with or without BPE)."""

    def __init__(self, tokenizer):
        codes = [[_event_code(token) for token in base] for base in vocab_base_tokens(tokenizer)]
        self.lengths = np.array([len(c) for c in codes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.codes = np.array([c for item in codes for c in item] or [OTHER], dtype=np.int16)

    @classmethod
    def for_tokenizer(cls, tokenizer) -> PitchReader:
        reader = getattr(tokenizer, "_midilm_pitch_reader", None)
        if reader is None or len(reader.lengths) != len(tokenizer):
            reader = tokenizer._midilm_pitch_reader = cls(tokenizer)
        return reader

    def rows(self, ids: np.ndarray, row_lengths: np.ndarray) -> list[np.ndarray]:
        """Pitches (int16, onset order, lowest first within an onset) of each of several rows of ids laid
        end to end. A last note without its Duration is left out, as miditok leaves it out when decoding."""
        ids = np.asarray(ids, dtype=np.int64)
        row_lengths = np.asarray(row_lengths, dtype=np.int64)
        lengths = self.lengths[ids]
        total = int(lengths.sum())
        # Expand every item to its base tokens' event codes, in order.
        first = np.repeat(self.offsets[ids] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        events = self.codes[first + np.arange(total)]
        row = np.repeat(np.repeat(np.arange(len(row_lengths)), row_lengths), lengths)
        kept = events != OTHER
        events, row = events[kept], row[kept]
        onset = np.cumsum(events == ONSET)
        is_pitch = events >= 0
        nxt = np.flatnonzero(is_pitch) + 1
        complete = np.zeros(len(events), dtype=bool)
        inside = nxt < len(events)
        hit = nxt[inside]
        complete[hit - 1] = (events[hit] == DURATION) & (row[hit] == row[hit - 1])
        pitch, onset, row = events[complete], onset[complete], row[complete]
        order = np.lexsort((pitch, onset, row))
        pitch, row = pitch[order], row[order]
        return np.split(pitch, np.searchsorted(row, np.arange(1, len(row_lengths))))

    def pitches(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return self.rows(ids, np.array([len(ids)]))[0]


def _event_code(token: str) -> int:
    kind, _, value = token.partition("_")
    if kind == "Pitch":
        return int(value)
    if kind in ("Bar", "Position", "TimeShift"):
        return ONSET
    if kind == "Duration":
        return DURATION
    return OTHER  # velocity, program, tempo, drums (PitchDrum), specials: not part of the pitch line


def interval_codes(pitches: np.ndarray) -> np.ndarray:
    """Successive pitch intervals as codes 1..255 (interval + 128)."""
    return (np.diff(np.asarray(pitches, dtype=np.int16)) + 128).astype(np.int16)


def suffix_array(x: np.ndarray) -> np.ndarray:
    """Start positions of the suffixes of `x` (non-negative ints) in lexicographic order.

    Prefix doubling: one sort of N int64 keys per doubling of the longest repeat. Ranks are int32
    and `key` is updated in place, so the build peaks near 40 bytes per item (measured), against the 5 the index
    keeps (1 of text, 4 of suffix array).
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    rank = np.unique(x, return_inverse=True)[1].astype(np.int32)
    step = 1
    while True:
        key = rank.astype(np.int64) * (n + 1)
        key[: n - step] += rank[step:].astype(np.int64) + 1  # 0: the suffix ends within `step`, so it sorts first
        order = np.argsort(key)
        key = key[order]
        new_rank = np.empty(n, dtype=np.int32)
        new_rank[order] = np.concatenate([[0], np.cumsum(key[1:] != key[:-1], dtype=np.int32)])
        del key
        rank = new_rank
        if rank[order[-1]] == n - 1 or step >= n:
            return order.astype(np.int32)
        step *= 2


@dataclass
class SharedRun:
    length: int  # intervals
    source: str | None  # the training piece it was found in
    sample_offset: int  # index of the run's first interval in the queried piece


class MemorizationIndex:
    """The training pieces' interval sequences and their suffix array; `longest_run` queries it."""

    def __init__(self, sources: list[str], codes: list[np.ndarray]):
        kept = [(s, c) for s, c in zip(sources, codes) if len(c)]
        self.sources = [s for s, _ in kept]
        pieces = [c for _, c in kept]
        self.starts = np.cumsum([0] + [len(c) + 1 for c in pieces[:-1]]).astype(np.int64)
        self.text = (
            np.concatenate([np.append(c, SEPARATOR) for c in pieces]).astype(np.uint8)
            if pieces
            else np.zeros(0, dtype=np.uint8)
        )
        self.suffixes = suffix_array(self.text)

    @property
    def pieces(self) -> int:
        return len(self.sources)

    @property
    def intervals(self) -> int:
        return len(self.text) - len(self.sources)

    @property
    def nbytes(self) -> int:
        return self.text.nbytes + self.suffixes.nbytes + self.starts.nbytes

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, int, np.ndarray]]) -> MemorizationIndex:
        """From (piece, chunk, pitches) per row, in any order: a piece's chunks are joined in chunk order."""
        by_piece: dict[str, list[tuple[int, np.ndarray]]] = {}
        for source, chunk, pitches in rows:
            by_piece.setdefault(source, []).append((chunk, pitches))
        sources = sorted(by_piece)
        codes = []
        for source in sources:
            chunks = by_piece.pop(source)
            chunks.sort(key=lambda c: c[0])
            codes.append(interval_codes(np.concatenate([p for _, p in chunks])))
        return cls(sources, codes)

    def longest_run(self, pitches: np.ndarray) -> SharedRun:
        """The longest run of consecutive intervals of `pitches` that one training piece holds, at any transposition."""
        query = interval_codes(pitches)
        m, n = len(query), len(self.text)
        if m == 0 or n == 0:
            return SharedRun(0, None, 0)
        padded = np.concatenate([query, np.full(m + 1, PAD, dtype=np.int16)])
        positions = np.arange(m)
        # Lower bound of every suffix of the query among the training suffixes, all at once.
        lo, hi = np.zeros(m, dtype=np.int64), np.full(m, n, dtype=np.int64)
        while (lo < hi).any():
            active = lo < hi
            mid = (lo + hi) // 2
            less, _ = self._compare(padded, positions[active], self.suffixes[np.minimum(mid[active], n - 1)])
            a_lo, a_hi, a_mid = lo[active], hi[active], mid[active]
            hi[active] = np.where(less, a_mid, a_hi)
            lo[active] = np.where(less, a_lo, a_mid + 1)
        # The longest match of a suffix is with one of its two neighbours in suffix order.
        best = SharedRun(0, None, 0)
        for neighbour in (lo - 1, lo):
            ok = (neighbour >= 0) & (neighbour < n)
            if not ok.any():
                continue
            starts = self.suffixes[neighbour[ok]]
            _, common = self._compare(padded, positions[ok], starts)
            k = int(np.argmax(common))
            if common[k] > best.length:
                piece = int(np.searchsorted(self.starts, starts[k], side="right") - 1)
                best = SharedRun(int(common[k]), self.sources[piece], int(positions[ok][k]))
        return best

    def _compare(
        self, padded: np.ndarray, at: np.ndarray, starts: np.ndarray, width: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """For query suffixes starting at `at` against training suffixes starting at `starts`: whether the
        query's is smaller, and their common prefix length. Compares `width` items first, then the full
        length for the pairs that agree that far (long matches are rare)."""
        less = np.zeros(len(at), dtype=bool)
        common = np.zeros(len(at), dtype=np.int64)
        todo = np.arange(len(at))
        limit = len(padded) // 2 + 1  # the query length + 1: its first PAD is always a mismatch
        offset = 0
        while len(todo):
            span = min(width, limit - offset)
            cols = offset + np.arange(span)
            q = padded[np.minimum(at[todo, None] + cols, len(padded) - 1)]
            t = self.text[np.minimum(starts[todo, None] + cols, len(self.text) - 1)].astype(np.int16)
            differ = q != t
            found = differ.any(axis=1)
            first = np.argmax(differ, axis=1)
            rows = todo[found]
            common[rows] = offset + first[found]
            less[rows] = q[found, first[found]] < t[found, first[found]]
            todo = todo[~found]
            offset += span
            width *= 4
        return less, common


def build_index(dataset, tokenizer, batch_size: int = 1024) -> MemorizationIndex:
    """The index of a split's original continuation pieces, streamed from Arrow `batch_size` rows at a time."""
    reader = PitchReader.for_tokenizer(tokenizer)
    batches = dataset.select_columns(list(ROW_COLUMNS)).with_format("arrow").iter(batch_size=batch_size)
    return MemorizationIndex.from_rows(row for table in batches for row in table_pitch_rows(table, reader))


ROW_COLUMNS = ("input_ids", "source", "chunk", "augmentation", "task")


def table_pitch_rows(table, reader: PitchReader) -> list[tuple[str, int, np.ndarray]]:
    """(piece, chunk, pitches) of the original continuation rows of one Arrow batch (`ROW_COLUMNS`).

    Augmented copies (a non-empty `augmentation`) are left out: they are transpositions of their
    original, whose intervals are already in. Accompaniment rows hold a melody and a full texture
    one after the other, not a piece's note sequence.
    """
    keep = (table.column("task").to_numpy(zero_copy_only=False) == "continuation") & (
        table.column("augmentation").to_numpy(zero_copy_only=False) == ""
    )
    if not keep.any():
        return []
    table = table.filter(keep)
    ids = table.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()[offsets[0] : offsets[-1]]
    pitches = reader.rows(values, np.diff(offsets))
    return list(zip(table.column("source").to_pylist(), table.column("chunk").to_pylist(), pitches))
