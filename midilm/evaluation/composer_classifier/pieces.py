"""The pieces a classifier reads: rows of token ids, MIDI files, the dataset's real pieces per composer and split."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from symusic import Score

from midilm.core.rows import RowLayout, full_section

# Scores from tokens, files and the dataset ------------------------------------------------------


def scores_from_ids(tokenizer, rows: Iterable[Sequence[int]]) -> list[Score]:
    """A Score per token-id row: its music tokens (after the last FULL token of an accompaniment row),
    without BOS, composer, EOS or padding."""
    from miditok import TokSequence  # here: miditok is heavy, and the evaluate modules import this module lazily for it

    special = set(tokenizer.special_tokens_ids)
    full = RowLayout.for_tokenizer(tokenizer).full
    out = []
    for row in rows:
        row = full_section([int(i) for i in row], full)
        music = [i for i in row if i not in special]
        out.append(
            tokenizer.decode(TokSequence(ids=music, are_ids_encoded=tokenizer.is_trained))
            if music
            else Score(tokenizer.time_division)
        )
    return out


def scores_from_midi(paths: Iterable[str | Path]) -> list[Score]:
    """A Score per MIDI file; an unreadable file is a ValueError naming it."""
    out = []
    for path in paths:
        try:
            out.append(Score(str(path)))
        except Exception as err:  # symusic raises plain RuntimeError on a malformed file
            raise ValueError(f"{path}: not a readable MIDI file ({err})") from err
    return out


def real_pieces(
    split, tokenizer, *, max_pieces_per_composer: int | None = 100, seed: int = 0, batch_size: int = 256
) -> dict[str, list[Score]]:
    """The original pieces of a dataset split (written by prepare_dataset.py), per composer name.

    Two streamed passes over Arrow batches: the first reads the small columns to list pieces and
    draw at most `max_pieces_per_composer` per composer (seeded); the second reads the token ids of
    the drawn pieces' continuation rows only, joins each piece's chunks in order and decodes it.
    Memory holds the drawn pieces, never the split.
    """
    names = split.features["composer"].names
    present = set(split.column_names)
    small = ["source", "composer"] + [c for c in ("augmentation", "task") if c in present]
    piece_rows: dict[str, list[int]] = defaultdict(list)
    piece_composer: dict[str, int] = {}
    offset = 0
    for table in split.select_columns(small).with_format("arrow").iter(batch_size=max(batch_size, 1024)):
        keep = np.ones(table.num_rows, dtype=bool)
        if "augmentation" in present:
            keep &= table.column("augmentation").to_numpy(zero_copy_only=False) == ""
        if "task" in present:
            keep &= table.column("task").to_numpy(zero_copy_only=False) == "continuation"
        sources = table.column("source").to_numpy(zero_copy_only=False)
        composers = table.column("composer").to_numpy()
        for k in np.flatnonzero(keep):
            piece_rows[sources[k]].append(offset + int(k))
            piece_composer[sources[k]] = int(composers[k])
        offset += table.num_rows
    rng = random.Random(seed)
    chosen: dict[str, list[str]] = defaultdict(list)
    by_composer: dict[int, list[str]] = defaultdict(list)
    for source, composer in sorted(piece_composer.items()):
        by_composer[composer].append(source)
    for composer, sources in sorted(by_composer.items()):
        if max_pieces_per_composer is not None and len(sources) > max_pieces_per_composer:
            sources = sorted(rng.sample(sources, max_pieces_per_composer))
        chosen[names[composer]] = sources
    indices = sorted(i for sources in chosen.values() for s in sources for i in piece_rows[s])
    chunks: dict[str, list[tuple[int, list[int]]]] = defaultdict(list)
    columns = ["input_ids", "source"] + (["chunk"] if "chunk" in present else [])
    position = 0
    for table in split.select(indices).select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        ids = table.column("input_ids").to_pylist()
        sources = table.column("source").to_pylist()
        order = table.column("chunk").to_pylist() if "chunk" in present else range(position, position + len(ids))
        for row, source, chunk in zip(ids, sources, order):
            chunks[source].append((chunk, row))
        position += len(ids)
    out: dict[str, list[Score]] = {}
    for name, sources in chosen.items():
        rows = []
        for source in sources:
            parts = sorted(chunks.pop(source, []), key=lambda c: c[0])
            rows.append([t for _, row in parts for t in row])
        out[name] = scores_from_ids(tokenizer, rows)
    return out
