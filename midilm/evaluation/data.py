"""Held-out and training data for the evaluation: the checked rows, the pieces they join into, and one
streamed pass over the training split."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from midilm.core.errors import InputError
from midilm.core.rows import body, body_mask, has_header, header, header_problems
from midilm.data.dataset import load_prepared
from midilm.evaluation.memorization import ROW_COLUMNS, MemorizationIndex, PitchReader, table_pitch_rows
from midilm.sampling.guard import count_histograms


def load_eval_dataset(dataset_dir: str | Path, split: str, tokenizer, composer_map) -> DatasetDict:
    """The prepared dataset, checked against the model's tokenizer before any work is done."""
    needed = {"input_ids", "composer", "source", "chunk", "augmentation", "n_notes", "task"}
    return load_prepared(dataset_dir, ("train", split), needed, composer_map.names, "the model in --model_dir")


def token_rows(ds, tokenizer, composer_map, where: str) -> list[dict]:
    """The continuation rows of a split (the music alone; accompaniment rows are measured by
    `evaluate_accompaniment`) as plain dicts, each checked: ids inside the vocabulary, [BOS, its composer] in front."""
    bos, vocab = tokenizer["BOS_None"], len(tokenizer)
    rows = ds.select_columns(["input_ids", "composer", "source", "chunk", "augmentation", "n_notes", "task"]).to_list()
    if rows and not any(row["task"] == "continuation" for row in rows):
        raise InputError(
            f"{where}: no continuation rows (built with --tasks accompaniment only); prepare with --tasks "
            "continuation,accompaniment"
        )
    rows = [row for row in rows if row["task"] == "continuation"]
    for row in rows:
        ids = row["input_ids"]
        if not has_header(ids, bos, {composer_map.token_ids[row["composer"]]}) or max(ids) >= vocab:
            raise InputError(
                f"{where}: the row of {row['source']} (chunk {row['chunk']}) does not fit the model's tokenizer "
                f"({vocab} tokens); evaluate a model on the dataset it was trained on"
            )
    return rows


def join_pieces(rows: list[dict], eos_id: int, originals_only: bool = True) -> list[dict]:
    """One entry per piece: its chunks' music tokens joined in order, as [BOS, COMPOSER, music..., EOS].

    Chunks are cut at bar lines, so the joined tokens are the piece's own token sequence.
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if not originals_only or not row["augmentation"]:
            groups[(row["source"], row["augmentation"])].append(row)
    pieces = []
    for (source, augmentation), chunks in sorted(groups.items()):
        chunks.sort(key=lambda r: r["chunk"])
        music = [t for r in chunks for t in body(r["input_ids"]) if t != eos_id]
        pieces.append(
            {
                "composer": chunks[0]["composer"],
                "source": source,
                "augmentation": augmentation,
                "ids": list(header(chunks[0]["input_ids"])) + music + [eos_id],
                "n_notes": sum(r["n_notes"] for r in chunks),
            }
        )
    return pieces


SCAN_BATCH_ROWS = 1024  # rows per Arrow batch of the training scan: its memory, whatever the split's size


@dataclass
class TrainingScan:
    """What evaluation needs from the training split, from one streamed pass over it."""

    token_counts: (
        np.ndarray
    )  # per vocabulary id, over the scored tokens of every continuation row (augmented copies included)
    pieces: np.ndarray  # original pieces per composer id
    rows: int  # continuation rows
    index: MemorizationIndex
    max_notes_per_onset: (
        np.ndarray
    )  # per composer id, the most notes starting at one onset in its original pieces (0: none)


def scan_training(ds, tokenizer, composer_map, where: str, batch_size: int = SCAN_BATCH_ROWS) -> TrainingScan:
    """Check the training split's continuation rows as `token_rows` checks a held-out split, count their
    tokens and pieces, find the most notes at one onset per composer, and build the memorization index,
    `batch_size` rows of Arrow at a time: no Python list of the split, no Score."""
    bos, vocab = tokenizer["BOS_None"], len(tokenizer)
    composer_tokens = np.asarray(composer_map.token_ids, dtype=np.int64)
    reader = PitchReader.for_tokenizer(tokenizer)
    counts = np.zeros(vocab, dtype=np.int64)
    pieces = np.zeros(len(composer_map.names), dtype=np.int64)
    onset_max = np.zeros(len(composer_map.names), dtype=np.int64)
    rows, any_rows, pitch_rows = 0, False, []
    columns = sorted({*ROW_COLUMNS, "composer"})
    for table in ds.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        any_rows = any_rows or table.num_rows > 0
        table = table.filter(table.column("task").to_numpy(zero_copy_only=False) == "continuation")
        if table.num_rows == 0:
            continue
        ids = table.column("input_ids").combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        values = ids.values.to_numpy()[offsets[0] : offsets[-1]].astype(np.int64)
        starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
        composer = table.column("composer").to_numpy()
        bad = header_problems(values, starts, lengths, bos, composer_tokens[composer])
        if len(values) and values.max() >= vocab:
            bad |= np.maximum.reduceat(values, np.minimum(starts, len(values) - 1)) >= vocab
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{where}: the row of {table.column('source')[k].as_py()} (chunk {table.column('chunk')[k].as_py()}) "
                "does not "
                f"fit the model's tokenizer ({vocab} tokens); evaluate a model on the dataset it was trained on"
            )
        # Scored tokens: every row's body.
        counts += np.bincount(values[body_mask(len(values), starts)], minlength=vocab)
        original = table.column("augmentation").to_numpy(zero_copy_only=False) == ""
        pieces += np.bincount(composer[original & (table.column("chunk").to_numpy() == 0)], minlength=len(pieces))
        # Chunks are cut at bar lines, so no onset straddles two rows; transposed copies hold the same counts.
        for k in np.unique(composer[original]):
            mine = np.flatnonzero(original & (composer == k))
            onset_hist, _ = count_histograms(tokenizer, (values[starts[j] : starts[j] + lengths[j]] for j in mine))
            onset_max[k] = max(onset_max[k], len(onset_hist) - 1)
        pitch_rows += table_pitch_rows(table, reader)
        rows += table.num_rows
    if any_rows and rows == 0:
        raise InputError(
            f"{where}: no continuation rows (built with --tasks accompaniment only); prepare with --tasks "
            "continuation,accompaniment"
        )
    return TrainingScan(counts, pieces, rows, MemorizationIndex.from_rows(pitch_rows), onset_max)
