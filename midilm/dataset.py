"""MIDI files → checked scores → bar-aligned token chunks → a split-by-piece Arrow DatasetDict."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from symusic import Score

from midilm.errors import InputError
from midilm.melody import extract_melody
from midilm.rows import RowLayout, music_room
from midilm.scan import Bounds, load_bounded, read_spill, worker_pool
from midilm.tokenizer import bar_start_table, encode_base_ids, encode_ids, load_tokenizer, vocab_base_tokens

SPLITS = ("train", "validation", "test")
# Files per row-writing task (see build_dataset): each loads the tokenizer (~30 ms), and the parent
# balances the workers with them.
SHARD_FILES = 500
# Rows per Arrow record batch a worker writes: few enough that a batch's arrays stay small.
BATCH_ROWS = 256


# `datasets` is imported inside the functions that need it: the data step's worker processes import
# this module for its checks and rows, and `datasets` would add ~100 MB to each.


def features(composers: list[str]):
    from datasets import ClassLabel, Features, Sequence, Value

    return Features(
        {
            "input_ids": Sequence(Value("int32")),
            "composer": ClassLabel(names=composers),
            "source": Value("string"),
            "chunk": Value("int32"),
            "augmentation": Value("string"),
            "n_notes": Value("int32"),
            "n_base_tokens": Value("int32"),
            "task": Value("string"),
        }
    )


def load_prepared(
    dataset_dir: str | Path, splits: tuple[str, ...], columns: set[str], composers: list[str], owner: str
):
    """A DatasetDict written by prepare_dataset.py, with `splits` and `columns`, whose composer labels
    are `composers` (those of `owner`, the tokenizer or model it is meant for); InputError otherwise."""
    from datasets import DatasetDict, load_from_disk

    path = Path(dataset_dir)
    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--dataset_dir {path}: not a dataset written by prepare_dataset.py ({err})") from err
    if not isinstance(dataset, DatasetDict) or not set(splits) <= set(dataset):
        raise InputError(f"--dataset_dir {path}: needs {' and '.join(splits)} splits")
    for name in splits:
        missing = columns - set(dataset[name].column_names)
        if missing:
            raise InputError(f"--dataset_dir {path}: split {name} lacks columns {', '.join(sorted(missing))}")
        names = dataset[name].features["composer"].names
        if names != composers:
            raise InputError(
                f"--dataset_dir {path} has composers {names} but {owner} has {composers}; use the two that "
                "prepare_dataset.py and train.py made together"
            )
    return dataset


def split_of(source: str, validation_ratio: float, test_ratio: float) -> str:
    """Deterministic split of one piece from a hash of its key (prepare uses the content hash of the
    piece's tokens, so the same music under two names lands in one split)."""
    h = int(hashlib.sha1(source.encode()).hexdigest()[:8], 16) / 2**32
    if h < test_ratio:
        return "test"
    return "validation" if h < test_ratio + validation_ratio else "train"


def assign_splits(sources: list[str], validation_ratio: float, test_ratio: float) -> dict[str, str]:
    """`split_of` for every piece; on a corpus so small that validation or test gets no piece, the
    train pieces with the lowest hashes are moved there, so evaluation always has data."""
    splits = {s: split_of(s, validation_ratio, test_ratio) for s in sources}
    for split, ratio in (("validation", validation_ratio), ("test", test_ratio)):
        train = sorted((s for s in sources if splits[s] == "train"), key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        if ratio > 0 and len(train) > 2 and not any(v == split for v in splits.values()):
            splits[train[0]] = split
    return splits


def chunk_bars(ids: np.ndarray, starts_bar: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Cut a token sequence at bar lines into chunks of at most `max_len` tokens.

    Bars are packed greedily; a single bar longer than `max_len` is cut inside (rare: dense bars
    of big orchestral scores), so that no token is lost.
    """
    bar_lines = np.flatnonzero(starts_bar[ids])
    bounds = list(bar_lines[bar_lines > 0]) + [len(ids)]
    chunks, start, prev = [], 0, 0
    for end in bounds:
        if end - start > max_len and prev > start:
            chunks.append(ids[start:prev])
            start = prev
        while end - start > max_len:
            chunks.append(ids[start : start + max_len])
            start += max_len
        prev = end
    if start < len(ids):
        chunks.append(ids[start:])
    return chunks


def split_bars(ids: np.ndarray, starts_bar: np.ndarray) -> list[np.ndarray]:
    """A token sequence as one array per bar (tokens before the first bar line, if any, join the first bar)."""
    bar_lines = np.flatnonzero(starts_bar[ids])
    cuts = bar_lines[bar_lines > 0]
    return [b for b in np.split(ids, cuts) if len(b)]


def empty_bar(tokenizer, base: list[list[str]], bar: np.ndarray) -> np.ndarray:
    """The ids of an empty bar with the bar line and time signature that begin `bar`, encoded as the
    tokenizer encodes an empty bar (`base`: `vocab_base_tokens(tokenizer)`)."""
    from miditok import TokSequence

    tokens = [t for i in bar[:2].tolist() for t in base[i]]
    seq = TokSequence(tokens=tokens[:1] + [t for t in tokens[1:2] if t.startswith("TimeSig_")])
    tokenizer.complete_sequence(seq)
    if tokenizer.is_trained:
        tokenizer.encode_token_ids(seq)
    return np.asarray(seq.ids, dtype=np.int64)


def paired_bars(
    tokenizer, base: list[list[str]], score: Score, full_ids: np.ndarray, starts_bar: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The melody's bars and the full piece's bars, as many of each; no bars when the melody is empty.

    Both tokenizations start at tick 0 and share the time signatures, so bar i of one is bar i of the
    other; where the melody ends before the piece, it is padded with empty bars.
    """
    full = split_bars(full_ids, starts_bar)
    melody_ids = encode_ids(tokenizer, extract_melody(score).score)
    if not len(melody_ids):
        return [], []
    melody = split_bars(melody_ids, starts_bar)[: len(full)]
    melody += [empty_bar(tokenizer, base, bar) for bar in full[len(melody) :]]
    return melody, full


def chunk_paired_bars(melody: list[np.ndarray], full: list[np.ndarray], room: int) -> list[tuple[int, int]]:
    """Bar ranges [k, j) whose melody and full bars together fit `room` tokens, packed greedily.

    A bar that alone does not fit is left out (a chunk never pairs a melody with part of its bars).
    """
    sizes = [len(m) + len(f) for m, f in zip(melody, full)]
    ranges, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if used + size > room:
            if i > start:
                ranges.append((start, i))
            start, used = i, 0
            if size > room:
                start = i + 1
                continue
        used += size
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


def augmentations(
    source: str, settings: dict, pitch_bounds: tuple[int, int], pitch_limits: tuple[int, int]
) -> list[tuple[int, int, float]]:
    """(pitch offset, velocity offset, tempo factor) for the augmented copies of one training piece.

    One copy per pitch offset that keeps every note inside the tokenizer's pitch range; velocity and
    tempo offsets are drawn from a generator seeded by the piece, so a rebuild gives the same data.
    """
    rng = random.Random(source)
    low, high = pitch_bounds
    copies = []
    for offset in settings["augment_pitch_offsets"]:
        if offset and pitch_limits[0] <= low + offset and high + offset < pitch_limits[1]:
            copies.append(
                (
                    offset,
                    rng.choice(settings["augment_velocity_offsets"]),
                    rng.choice(settings["augment_tempo_factors"]),
                )
            )
    return copies


def augment(score: Score, pitch: int, velocity: int, tempo_factor: float) -> Score:
    from miditok.data_augmentation import augment_score

    out = augment_score(score, pitch_offset=pitch, velocity_offset=velocity, augment_copy=True)
    for tempo in out.tempos:
        tempo.qpm = tempo.qpm * tempo_factor
    return out


_rows_worker: dict = {}


def _init_rows_worker(tokenizer_dir: str) -> None:
    # One tokenizer per worker process, not one per shard: a tokenizer that has encoded does not give
    # its memory back when dropped (measured: ~23 MB more per shard of 500 files, for good), so a
    # fresh one per shard made the step's memory grow with the corpus.
    _rows_worker["tokenizer"] = (tokenizer_dir, load_tokenizer(tokenizer_dir))


def generate_rows(
    shards: list[list[dict]],
    tokenizer_dir: str,
    max_seq_len: int,
    augment_settings: dict | None,
    tasks: tuple[str, ...] = ("continuation",),
    spill: str | None = None,
    scan_vocab: list[str] | None = None,
    bounds: dict | None = None,
    loaded: tuple | None = None,
) -> Iterator[dict]:
    """Rows of some shards of files, for each task (`input_ids` as int32 arrays). Runs in a worker
    process (`write_rows`), with the tokenizer its pool loaded (`_init_rows_worker`), or `loaded`
    (`load_tokenizer(tokenizer_dir)`), else loads it.

    A file's original tokens come from the scan (`spill`: base ids in the scan's vocabulary
    `scan_vocab`, BPE applied here); the file is parsed again only for what needs the score:
    augmented copies and the melody of accompaniment rows (`bounds`: the scan's, so it is cut the same way).
    """
    held = _rows_worker.get("tokenizer")
    tokenizer, composer_map = loaded or (
        held[1] if held and held[0] == tokenizer_dir else load_tokenizer(tokenizer_dir)
    )
    rows = _RowMaker(tokenizer, max_seq_len, "infill" in tasks)
    pitch_limits = tokenizer.config.pitch_range
    remap = np.array([tokenizer.vocab[t] for t in scan_vocab], dtype=np.int64) if scan_vocab else None
    bounds = Bounds(**bounds) if bounds else Bounds()
    for file in (f for shard in shards for f in shard):
        ids = encode_base_ids(tokenizer, remap[read_spill(spill, file["offset"], file["length"])]) if spill else None
        score = None
        if ids is None or augment_settings or "accompaniment" in tasks:
            score, reason, _ = load_bounded(Path(file["path"]), bounds)
            if score is None:  # the file changed since the scan; it was checked then, so this is rare
                continue
        variants = [(0, 0, 1.0)]
        if augment_settings:
            pitches = [n.pitch for t in score.tracks if not t.is_drum for n in t.notes]
            if pitches:
                variants += augmentations(file["source"], augment_settings, (min(pitches), max(pitches)), pitch_limits)
        for pitch, velocity, tempo in variants:
            original = (pitch, velocity, tempo) == (0, 0, 1.0)
            variant = score if original else augment(score, pitch, velocity, tempo)
            if not original or ids is None:
                try:
                    ids = encode_ids(tokenizer, variant)
                except Exception:  # an augmented copy the tokenizer rejects is left out; the original was scanned
                    continue
            if len(ids) == 0:
                continue
            label = "" if original else f"pitch{pitch:+d} velocity{velocity:+d} tempo×{tempo:g}"
            row = {"composer": file["label"], "source": file["source"], "augmentation": label}
            composer_id = composer_map.token_ids[file["label"]]
            if "accompaniment" in tasks:
                yield from rows.accompaniment(row, composer_id, variant, ids)
            if "continuation" in tasks:
                yield from rows.continuation(row, composer_id, ids)


class _RowMaker:
    """The rows of one piece (one variant of it) for each task, with their note and base-token counts."""

    def __init__(self, tokenizer, max_seq_len: int, infill: bool = False):
        self.tokenizer, self.max_seq_len = tokenizer, max_seq_len
        # a continuation row that training may turn into an infill row keeps room for GAP and FILL
        self.continuation_room = music_room(max_seq_len, "infill" if infill else "continuation")
        self.base = vocab_base_tokens(tokenizer)
        self.starts_bar = np.array(bar_start_table(tokenizer))
        self.notes_of = np.array([sum(t.startswith("Pitch_") for t in b) for b in self.base])
        self.length_of = np.array([len(b) for b in self.base])
        self.layout = RowLayout.for_tokenizer(tokenizer)

    def counts(self, music: np.ndarray) -> dict:
        return {"n_notes": int(self.notes_of[music].sum()), "n_base_tokens": int(self.length_of[music].sum())}

    def accompaniment(self, row: dict, composer_id: int, score: Score, ids: np.ndarray) -> Iterator[dict]:
        """Melody bars and the same bars in full, as many as fit a row; counts are the full section's."""
        melody, full = paired_bars(self.tokenizer, self.base, score, ids, self.starts_bar)
        ranges = chunk_paired_bars(melody, full, music_room(self.max_seq_len, "accompaniment"))
        for k, (first, stop) in enumerate(ranges):
            melody_part, full_part = np.concatenate(melody[first:stop]), np.concatenate(full[first:stop])
            yield {
                **row,
                "input_ids": self.layout.accompaniment(composer_id, melody_part, full_part, last=stop == len(full)),
                "chunk": k,
                **self.counts(full_part),
                "task": "accompaniment",
            }

    def continuation(self, row: dict, composer_id: int, ids: np.ndarray) -> Iterator[dict]:
        """The piece cut at bar lines into rows. EOS only on its last chunk: it means "the piece ends
        here", so a model does not learn to stop after one context's worth of music."""
        chunks = chunk_bars(ids, self.starts_bar, self.continuation_room)
        for k, chunk in enumerate(chunks):
            yield {
                **row,
                "input_ids": self.layout.continuation(composer_id, chunk, last=k == len(chunks) - 1),
                "chunk": k,
                **self.counts(chunk),
                "task": "continuation",
            }


def rows_batch(rows: list[dict], schema):
    """Rows as one Arrow record batch of `schema`; the token ids go in as one flat array, never as
    Python ints (millions of small objects would fragment the heap of a long run)."""
    import pyarrow as pa

    lengths = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([r["input_ids"] for r in rows]) if rows else np.zeros(0, dtype=np.int32)
    columns = {
        "input_ids": pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(values, type=pa.int32()), type=schema.field("input_ids").type
        )
    }
    for name in schema.names:
        if name != "input_ids":
            columns[name] = pa.array([r[name] for r in rows], type=schema.field(name).type)
    return pa.RecordBatch.from_arrays([columns[n] for n in schema.names], schema=schema)


def write_rows(
    path: str,
    schema,
    files: list[dict],
    tokenizer_dir: str,
    max_seq_len: int,
    augment_settings: dict | None,
    tasks: tuple[str, ...],
    scan: dict,
    loaded: tuple | None = None,
) -> int:
    """The rows of `files` written to `path` as an Arrow stream, the format `datasets` maps; the row count.
    Rows go to disk a batch at a time, so nothing here grows with the corpus."""
    import pyarrow as pa

    count, batch = 0, []
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for row in generate_rows([files], tokenizer_dir, max_seq_len, augment_settings, tasks, **scan, loaded=loaded):
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                writer.write_batch(rows_batch(batch, schema))
                count, batch = count + len(batch), []
        if batch:
            writer.write_batch(rows_batch(batch, schema))
            count += len(batch)
    return count


def build_dataset(
    files_by_split: dict[str, list[dict]],
    tokenizer_dir: Path,
    composers: list[str],
    max_seq_len: int,
    augment_settings: dict | None,
    num_proc: int,
    cache_dir: Path,
    tasks: tuple[str, ...] = ("continuation",),
    scan: dict | None = None,
):
    """The DatasetDict of every split, memory-mapped from Arrow files under `cache_dir`.

    `scan`: `spill`, `scan_vocab` and `bounds` of the scan that read the files (see `generate_rows`).
    With `num_proc` > 1, shards of files are written by worker processes (`midilm.scan.worker_pool`:
    light processes, not forks of this one), all splits in one pool so that every worker stays busy;
    with 1, here. They are mapped in file order, so the rows do not depend on `num_proc`, and each
    writer loads the tokenizer once. The parent holds only file names.
    """
    from concurrent.futures import as_completed

    from datasets import Dataset, DatasetDict, concatenate_datasets
    from tqdm.auto import tqdm

    feats = features(composers)
    schema = feats.arrow_schema
    workers = max(1, num_proc)
    jobs: dict[str, list[tuple[str, list[dict]]]] = {}
    for split in SPLITS:
        files = files_by_split.get(split, [])
        count = min(len(files), max(workers, -(-len(files) // SHARD_FILES)))
        jobs[split] = [
            (str(cache_dir / f"{split}-{k:05d}.arrow"), files[k * len(files) // count : (k + 1) * len(files) // count])
            for k in range(count)
        ]
    tasks_of = [
        (
            path,
            schema,
            shard,
            str(tokenizer_dir),
            max_seq_len,
            augment_settings if split == "train" else None,
            tuple(tasks),
            scan or {},
        )
        for split in SPLITS
        for path, shard in jobs[split]
    ]
    if workers == 1:
        # here, not in a worker: a second process would hold a second copy of the libraries (~200 MB)
        # while this one waits
        loaded = load_tokenizer(tokenizer_dir)
        for task in tqdm(tasks_of, desc="writing rows", unit="shard"):
            write_rows(*task, loaded=loaded)
    else:
        with worker_pool(workers, _init_rows_worker, (str(tokenizer_dir),)) as pool:
            futures = [pool.submit(write_rows, *task) for task in tasks_of]
            for future in tqdm(as_completed(futures), total=len(futures), desc="writing rows", unit="shard"):
                future.result()
    splits = {}
    for split in SPLITS:
        parts = [Dataset.from_file(path) for path, _ in jobs[split]]
        splits[split] = (
            concatenate_datasets(parts) if parts else Dataset.from_dict({k: [] for k in feats}, features=feats)
        )
    return DatasetDict(splits)
