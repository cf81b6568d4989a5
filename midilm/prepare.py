"""The whole data step: find and check MIDI files, label composers, train the tokenizer, write the dataset."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import load_from_disk
from tqdm.auto import tqdm

from midilm.corpus import music21_corpus_files
from midilm.dataset import SPLITS, assign_splits, build_dataset
from midilm.errors import InputError
from midilm.finetune import composer_vocabulary as base_composer_vocabulary
from midilm.finetune import extend_tokenizer, resolve_base, tokenizer_settings_of, write_base_file
from midilm.hub import push_dataset, write_dataset_card
from midilm.outputs import replace_dir, staging_dir
from midilm.rows import TASKS, continuation_overhead, full_section
from midilm.scan import Bounds, Spill, read_spill, scan_files, scan_vocabulary
from midilm.sources import SourceFile, find_midi_files, read_metadata, relabel
from midilm.tokenizer import (
    FULL_TOKEN,
    OTHER,
    BarWordsIterator,
    build_tokenizer,
    infill_token_ids,
    save_tokenizer,
)
from midilm.tokenizer import tokenizer_settings as resolve_tokenizer_settings

REPORT_FILE = "prepare_report.json"
CONFIG_FILE = "prepare_config.json"
BPE_MAX_FILES = 2000
BPE_MAX_FILES_WHY = "BPE cost ~6 ms and ~35 MB per 1,000 files here, and tokens per note stopped falling by 250 files"


@dataclass
class PrepareArguments:
    midi_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of MIDI files, one sub-folder per composer. Without it (and without --metadata) the scores bundled in music21 are used."
        },
    )
    metadata: str | None = field(
        default=None,
        metadata={
            "help": "CSV or JSONL with columns path,composer (paths relative to --midi_dir); overrides folder labels."
        },
    )
    composers: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated composers to keep, e.g. bach,mozart (music21 corpus folder names or your labels)."
        },
    )
    max_files_per_composer: int | None = field(
        default=None, metadata={"help": "Keep at most this many files per composer (quick runs)."}
    )
    min_pieces_per_composer: int = field(
        default=10, metadata={"help": "Composers with fewer valid pieces are folded into OTHER."}
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Encode the files with this trained midilm model's tokenizer (a model folder or a Hub repo id), to fine-tune it with train.py --init_from: its BPE vocabulary and settings are kept byte for byte (--vocab_size and config.json's tokenizer section do not apply), composers it knows keep their ids, new ones get tokens after its last id."
        },
    )
    vocab_size: int = field(default=1000, metadata={"help": "BPE vocabulary size; 0 = no BPE (base REMI vocabulary)."})
    # BPE's cost grows with the files it reads (word counts held in memory; MidiTok #217: a crash at
    # 298k files, fine at 10k) while its merges settle long before. Measured (bench/RESULTS.md,
    # "Prepare at scale"): 250 → 4,000 files cost 1.5 → 22 s and 282 → 422 MB, tokens per note 1.334 → 1.332.
    # 2,000 leaves room for corpora more varied than that one, at ~12 s.
    bpe_max_files: int = field(
        default=BPE_MAX_FILES,
        metadata={
            "help": f"BPE learns from at most this many training pieces, drawn with --seed (default {BPE_MAX_FILES}: {BPE_MAX_FILES_WHY})."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the BPE training sample."})
    max_silence_beats: float = field(
        default=64.0,
        metadata={
            "help": "Longest silence (quarter notes, every track silent) a piece may hold: a few stray notes after a longer one are cut, otherwise the file is skipped (each reported)."
        },
    )
    max_seq_len: int = field(
        default=1024,
        metadata={"help": "Longest chunk in tokens, BOS/COMPOSER/EOS included; pieces are cut at bar lines."},
    )
    validation_ratio: float = field(default=0.1, metadata={"help": "Share of pieces in the validation split."})
    test_ratio: float = field(default=0.1, metadata={"help": "Share of pieces in the test split."})
    augment: bool = field(
        default=False,
        metadata={"help": "Add transposed copies (with velocity and tempo offsets) of the training pieces."},
    )
    augment_pitch_offsets: list[int] = field(
        default_factory=lambda: [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5],
        metadata={
            "help": "Semitone offsets, one augmented copy each (skipped where a note would leave the pitch range)."
        },
    )
    augment_velocity_offsets: list[int] = field(
        default_factory=lambda: [-8, 0, 8], metadata={"help": "Velocity offsets drawn from for each copy."}
    )
    augment_tempo_factors: list[float] = field(
        default_factory=lambda: [0.9, 1.0, 1.1], metadata={"help": "Tempo factors drawn from for each copy."}
    )
    tasks: str = field(
        default="continuation",
        metadata={
            "help": "Comma-separated tasks to build rows for: continuation (the music alone) and/or accompaniment (a melody, then the full piece for the same bars)."
            " infill (with continuation): train.py turns continuation rows into infill rows (a span of bars to rewrite"
            " between the bars around it) on the fly; their rows keep room for its two markers."
        },
    )
    output_dir: str = field(default="data", metadata={"help": "Where the DatasetDict is written (save_to_disk)."})
    tokenizer_dir: str = field(
        default="tokenizer", metadata={"help": "Where the tokenizer and composers.json are written."}
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace an existing output or tokenizer folder (only once the new one is complete)."},
    )
    num_proc: int = field(
        default=os.cpu_count() or 1, metadata={"help": "Worker processes for parsing and tokenizing."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where music21 scores converted to MIDI are cached (default ~/.cache/midilm)."}
    )
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repo id to push the dataset, its card and the tokenizer to."}
    )

    def __post_init__(self):
        if (
            not 0 <= self.validation_ratio < 1
            or not 0 <= self.test_ratio < 1
            or self.validation_ratio + self.test_ratio >= 1
        ):
            raise InputError("--validation_ratio and --test_ratio must be in [0, 1) and leave pieces for training")
        if self.max_seq_len < 16:
            raise InputError("--max_seq_len must be at least 16 tokens")
        if self.bpe_max_files < 1:
            raise InputError("--bpe_max_files must be at least 1")
        if self.max_silence_beats <= 0:
            raise InputError("--max_silence_beats must be a positive number of quarter notes")
        if self.vocab_size < 0:
            raise InputError("--vocab_size must be 0 (no BPE) or a vocabulary size")
        tasks = self.task_list()
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise InputError(f"--tasks {self.tasks!r}: choose one or more of {', '.join(TASKS)}, comma-separated")
        if "infill" in tasks and "continuation" not in tasks:
            raise InputError(
                f"--tasks {self.tasks!r}: infill rows are drawn from continuation rows while training; "
                "add continuation (--tasks continuation,infill)"
            )

    def task_list(self) -> tuple[str, ...]:
        names = self.tasks if isinstance(self.tasks, (list, tuple)) else str(self.tasks).split(",")
        return tuple(dict.fromkeys(t.strip() for t in names if t.strip()))


def collect_files(args: PrepareArguments) -> tuple[list[SourceFile], dict[str, str]]:
    """The labelled files to use, and those already known to be unusable (source → reason)."""
    wanted = [c.strip() for c in args.composers.split(",") if c.strip()] if args.composers else None
    if args.midi_dir is None and args.metadata is None:
        return music21_corpus_files(
            wanted, args.max_files_per_composer, args.num_proc, Path(args.cache_dir) if args.cache_dir else None
        )
    files = find_midi_files(Path(args.midi_dir)) if args.midi_dir else []
    if args.metadata:
        files = relabel(files, read_metadata(Path(args.metadata), Path(args.midi_dir) if args.midi_dir else None))
    if wanted:
        keep = {c.lower() for c in wanted}
        files = [f for f in files if f.composer.lower() in keep]
    if args.max_files_per_composer:
        seen: Counter[str] = Counter()
        files = [f for f in files if (seen.update([f.composer]) or seen[f.composer] <= args.max_files_per_composer)]
    return files, {}


def composer_vocabulary(counts: Counter[str], min_pieces: int) -> tuple[list[str], dict[str, str]]:
    """Composers that keep their own token (alphabetical, OTHER last) and each label's folded name."""
    kept = sorted(c for c, n in counts.items() if n >= min_pieces and c != OTHER)
    folded = {c: (c if c in kept else OTHER) for c in counts}
    return kept + ([OTHER] if OTHER in folded.values() else []), folded


@dataclass
class Piece:
    """A kept file, as the rest of the step needs it: where its scanned ids lie in the spill."""

    file: SourceFile
    offset: int
    length: int
    notes: int
    bars: int
    digest: str


def scan_corpus(
    files: list[SourceFile], args: PrepareArguments, settings: dict, spill_path: Path
) -> tuple[list[Piece], dict, dict, dict]:
    """Scan every file once (midilm.scan): the kept pieces, in file order and without duplicates;
    and the skipped (source → reason), duplicate (source → the source kept) and cut (source → what) files."""
    bounds = Bounds(max_silence_beats=args.max_silence_beats)
    found: list[Piece | None] = [None] * len(files)
    skipped, cut = {}, {}
    spill = Spill(spill_path)
    try:
        for result in tqdm(
            scan_files([f.path for f in files], settings, bounds, args.num_proc),
            total=len(files),
            desc="reading MIDI files",
            unit="file",
        ):
            file = files[result.index]
            if result.reason:
                skipped[file.source] = result.reason
                continue
            if result.cut:
                cut[file.source] = result.cut
            found[result.index] = Piece(file, *spill.append(result.ids), result.notes, result.bars, result.digest)
    finally:
        spill.close()
    pieces, first_of, duplicates = [], {}, {}
    for piece in found:
        if piece is None:
            continue
        first = first_of.setdefault(piece.digest, piece.file.source)
        if first != piece.file.source:
            duplicates[piece.file.source] = first
        else:
            pieces.append(piece)
    return pieces, skipped, duplicates, cut


def flag_outliers(pieces: list[Piece]) -> tuple[dict[str, str], dict[str, list[float]]]:
    """Pieces whose tokens per note or per bar lie far from the corpus's own (kept, only reported):
    outside the median times or divided by max(2, e^(4 robust standard deviations of the log))."""
    flagged: dict[str, str] = {}
    normal = {}
    if len(pieces) < 10:  # too few pieces to say what is normal
        return flagged, normal
    for name, values in (
        ("tokens per note", np.array([p.length / p.notes for p in pieces])),
        ("tokens per bar", np.array([p.length / max(p.bars, 1) for p in pieces])),
    ):
        logs = np.log(values)
        median = np.median(logs)
        spread = max(4 * 1.4826 * np.median(np.abs(logs - median)), np.log(2))
        low, high = float(np.exp(median - spread)), float(np.exp(median + spread))
        normal[name.replace(" ", "_")] = [round(low, 3), round(high, 3)]
        for piece, value in zip(pieces, values):
            if not low <= value <= high:
                text = f"{name} {value:.1f} outside the corpus's normal {low:.1f}-{high:.1f}"
                flagged[piece.file.source] = (
                    f"{flagged[piece.file.source]}; {text}" if piece.file.source in flagged else text
                )
    return flagged, normal


def bpe_sample(train: list[Piece], max_files: int, seed: int) -> list[Piece]:
    """At most `max_files` training pieces, drawn with `seed`, in spill order (sequential reads)."""
    chosen = train if len(train) <= max_files else random.Random(seed).sample(train, max_files)
    return sorted(chosen, key=lambda p: p.offset)


def train_tokenizer(
    settings: dict,
    composers: list[str],
    pieces_per_composer: list[int],
    train: list[Piece],
    args: PrepareArguments,
    spill: Path,
):
    """REMI with the composer tokens, then BPE learnt on a sample of the training pieces (their base
    tokens read back from the scan's `spill`). Returns the tokenizer, its composer map, the base
    vocabulary size, the scan's vocabulary and the BPE sample."""
    tokenizer, composer_map = build_tokenizer(settings, composers)
    composer_map.pieces = pieces_per_composer
    base_vocab = len(tokenizer)
    scan_vocab = scan_vocabulary(settings)
    remap = np.array([tokenizer.vocab[t] for t in scan_vocab], dtype=np.int64)
    sample = bpe_sample(train, args.bpe_max_files, args.seed) if args.vocab_size else []
    if args.vocab_size:
        if args.vocab_size <= base_vocab:
            raise InputError(
                f"--vocab_size {args.vocab_size} must exceed the base REMI vocabulary ({base_vocab}), or be 0 for no BPE"
            )
        sequences = lambda: (remap[read_spill(spill, p.offset, p.length)] for p in sample)  # noqa: E731
        tokenizer.train(
            vocab_size=args.vocab_size, model="BPE", iterator=BarWordsIterator(tokenizer, sequences, len(sample))
        )
    return tokenizer, composer_map, base_vocab, scan_vocab, sample


def extend_base_tokenizer(
    base, composers: list[str], pieces_per_composer: list[int], settings: dict, folders: tuple[Path, ...]
):
    """The base model's tokenizer with the new composers appended (midilm.finetune.extend_tokenizer),
    its base recorded in each of `folders`. Returns what `train_tokenizer` returns (no BPE sample)."""
    tokenizer, base_map = base.tokenizer, base.composer_map
    scan_vocab = scan_vocabulary(settings)
    if missing := [t for t in scan_vocab if t not in tokenizer.vocab]:
        raise InputError(
            f"--base_model {base.source}: its tokenizer lacks tokens the scan encodes ({', '.join(missing[:5])}); was it made by prepare_dataset.py?"
        )
    composer_map = extend_tokenizer(tokenizer, base_map, composers)
    composer_map.pieces = pieces_per_composer
    for folder in folders:
        write_base_file(folder, base, base_map.names, composers[len(base_map.names) :])
    return tokenizer, composer_map, len(tokenizer.vocab), scan_vocab, []


def row_files(by_split: dict[str, list[Piece]], composers: list[str], folded: dict[str, str]) -> dict[str, list[dict]]:
    """What the row writers need of each piece: file names, labels and the scan's spill offsets (no scores)."""
    label_of = {c: composers.index(f) for c, f in folded.items()}
    return {
        split: [
            {
                "path": str(p.file.path),
                "source": p.file.source,
                "label": label_of[p.file.composer],
                "offset": p.offset,
                "length": p.length,
            }
            for p in chosen
        ]
        for split, chosen in by_split.items()
    }


def write_dataset(
    files_by_split: dict[str, list[dict]],
    tok_tmp: Path,
    data_tmp: Path,
    work: Path,
    composers: list[str],
    scan_vocab: list[str],
    args: PrepareArguments,
    timings: dict,
):
    """The rows as Arrow files, saved to `data_tmp` and read back from there (so the work cache can go)."""
    clock = time.perf_counter()
    augment = (
        {k: getattr(args, k) for k in ("augment_pitch_offsets", "augment_velocity_offsets", "augment_tempo_factors")}
        if args.augment
        else None
    )
    scan = {
        "spill": str(work / "scan.bin"),
        "scan_vocab": tuple(scan_vocab),
        "bounds": {"max_silence_beats": args.max_silence_beats},
    }
    dataset = build_dataset(
        files_by_split, tok_tmp, composers, args.max_seq_len, augment, args.num_proc, work, args.task_list(), scan
    )
    timings["rows"] = time.perf_counter() - clock
    clock = time.perf_counter()
    dataset.save_to_disk(str(data_tmp), num_proc=None)
    timings["write"] = time.perf_counter() - clock
    del dataset
    dataset = load_from_disk(str(data_tmp))  # the saved copy, so the cache can go
    shutil.rmtree(work, ignore_errors=True)
    return dataset


def add_file_lists(report: dict, duplicates: dict, cut: dict, flagged: dict, normal: dict) -> None:
    """The files the scan set aside or cut, each with its reason, into the report."""
    report["files"].update(duplicates=len(duplicates), cut=len(cut), flagged=len(flagged))
    report["duplicate_files"] = dict(sorted(duplicates.items()))
    report["cut_files"] = dict(sorted(cut.items()))
    report["flagged_files"] = dict(sorted(flagged.items()))
    report["normal_range"] = normal


def prepare(args: PrepareArguments, tokenizer_overrides: dict | None = None) -> dict:
    """Scan, tokenize and split the files; write the tokenizer and the dataset (with the resolved
    configuration beside it) whole, or nothing. `tokenizer_overrides`: config.json's `tokenizer` section."""
    tokenizer_settings = resolve_tokenizer_settings(tokenizer_overrides)
    output_dir, tokenizer_dir = Path(args.output_dir), Path(args.tokenizer_dir)
    for flag, path in (("--output_dir", output_dir), ("--tokenizer_dir", tokenizer_dir)):
        if path.exists() and not args.overwrite:
            raise InputError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another folder")

    base = resolve_base(args.base_model, "--base_model") if args.base_model else None
    if base is not None and "infill" in args.task_list() and infill_token_ids(base.tokenizer) is None:
        raise InputError(
            f"--base_model {base.source}: its tokenizer was made before the infill task (no GAP/FILL markers), "
            "so it cannot learn infilling; leave infill out of --tasks"
        )
    if base is not None:
        tokenizer_settings = tokenizer_settings_of(base.tokenizer)
    files, skipped = collect_files(args)
    seen = len(files) + len(skipped)
    timings = {}
    with staging_dir(tokenizer_dir) as tok_tmp, staging_dir(output_dir) as data_tmp:
        work = data_tmp / ".cache"
        work.mkdir()
        # Read every file once: checks, bounds, base tokens, content hash
        clock = time.perf_counter()
        pieces, scan_skipped, duplicates, cut = (
            scan_corpus(files, args, tokenizer_settings, work / "scan.bin") if files else ([], {}, {}, {})
        )
        skipped.update(scan_skipped)
        timings["scan"] = time.perf_counter() - clock
        if not pieces:
            raise InputError(
                f"no usable MIDI files ({len(files)} found, {len(skipped)} skipped); check --midi_dir / --metadata / --composers"
            )
        flagged, normal = flag_outliers(pieces)

        # Composer vocabulary (the base's first, when building on one), and splits by content, so a
        # duplicate under another name can't cross them
        counts = Counter(p.file.composer for p in pieces)
        if base is None:
            composers, folded = composer_vocabulary(counts, args.min_pieces_per_composer)
        else:
            composers, folded = base_composer_vocabulary(base.composer_map, counts, args.min_pieces_per_composer)
        splits = assign_splits([p.digest for p in pieces], args.validation_ratio, args.test_ratio)
        by_split: dict[str, list[Piece]] = {s: [] for s in SPLITS}
        for piece in pieces:
            by_split[splits[piece.digest]].append(piece)

        # Tokenizer: REMI, then BPE learnt on a sample of the training pieces; or the base's, extended
        clock = time.perf_counter()
        pieces_per_composer = [sum(counts[c] for c, f in folded.items() if f == name) for name in composers]
        if base is None:
            tokenizer, composer_map, base_vocab, scan_vocab, sample = train_tokenizer(
                tokenizer_settings, composers, pieces_per_composer, by_split["train"], args, work / "scan.bin"
            )
        else:
            tokenizer, composer_map, base_vocab, scan_vocab, sample = extend_base_tokenizer(
                base,
                composers,
                pieces_per_composer,
                tokenizer_settings,
                (tok_tmp, data_tmp),
            )
        save_tokenizer(tokenizer, composer_map, tok_tmp)
        timings["bpe"] = time.perf_counter() - clock

        # Dataset rows, then Arrow files
        files_by_split = row_files(by_split, composers, folded)
        del by_split
        dataset = write_dataset(files_by_split, tok_tmp, data_tmp, work, composers, scan_vocab, args, timings)

        report = make_report(
            seen,
            len(pieces),
            skipped,
            dataset,
            composers,
            composer_map.to_json(),
            base_vocab,
            len(tokenizer),
            args.task_list(),
            (tokenizer[FULL_TOKEN], tokenizer["EOS_None"]),
        )
        add_file_lists(report, duplicates, cut, flagged, normal)
        report["bpe"] = {"training_files": len(sample), "max_files": args.bpe_max_files, "seed": args.seed}
        if base is not None:
            report["bpe"] = {"from_base_model": base.source}
            report["base_model"] = {**base.record(), "new_composers": composers[len(base.composer_map.names) :]}
        report["seconds"] = {k: round(v, 2) for k, v in timings.items()}
        (data_tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        resolved = {
            "prepare": asdict(args),
            "tokenizer": tokenizer_settings,
            **({"base_model": base.record()} if base else {}),
        }
        (data_tmp / CONFIG_FILE).write_text(json.dumps(resolved, indent=2, ensure_ascii=False) + "\n")
        write_dataset_card(data_tmp, report, resolved)
        del dataset

        replace_dir(tok_tmp, tokenizer_dir)
        replace_dir(data_tmp, output_dir)

    if args.push_to_hub:
        push_dataset(output_dir, tokenizer_dir, args.push_to_hub)
    return report


def make_report(
    seen: int,
    kept: int,
    skipped: dict[str, str],
    dataset,
    composers: list[str],
    composer_json: dict,
    base_vocab: int,
    vocab: int,
    tasks: tuple[str, ...] = ("continuation",),
    ids_after: tuple[int, int] | None = None,
) -> dict:
    """The dataset's figures; `ids_after` = (FULL, EOS) token ids, needed when there are accompaniment rows only.

    Computed with Arrow on the memory-mapped splits: no column is copied into Python objects.
    """
    per_split = {}
    notes = base_tokens = tokens = 0
    # Tokens per note from one task's rows, so no note counts twice: continuation's, else the full
    # sections of accompaniment rows (their melody sections repeat notes of the piece).
    measured = "continuation" if "continuation" in tasks else "accompaniment"
    for split in SPLITS:
        ds = dataset[split]
        table = ds.data.table
        rows = pa.table(
            {
                "composer": table.column("composer"),
                "source": table.column("source"),
                "length": pc.list_value_length(table.column("input_ids")),
                "augmentation": table.column("augmentation"),
                "task": table.column("task"),
                "n_notes": table.column("n_notes"),
                "n_base_tokens": table.column("n_base_tokens"),
            }
        )
        grouped = (
            rows.group_by("composer")
            .aggregate([("source", "count_distinct"), ("length", "sum"), ("length", "count")])
            .to_pylist()
        )
        by_label = {g["composer"]: g for g in grouped}
        per_composer = {
            name: {
                "pieces": int(by_label.get(label, {}).get("source_count_distinct", 0)),
                "chunks": int(by_label.get(label, {}).get("length_count", 0)),
                "tokens": int(by_label.get(label, {}).get("length_sum", 0) or 0),
            }
            for label, name in enumerate(composers)
        }
        by_task = {g["task"]: g["task_count"] for g in rows.group_by("task").aggregate([("task", "count")]).to_pylist()}
        per_split[split] = {
            "pieces": int(pc.count_distinct(rows.column("source")).as_py()) if len(rows) else 0,
            "chunks": len(rows),
            "tokens": int(pc.sum(rows.column("length")).as_py() or 0),
            "composers": per_composer,
            # infill rows are drawn from continuation rows while training, none is stored
            "tasks": {task: int(by_task.get(task, 0)) for task in tasks if task != "infill"},
        }
        originals = rows.filter(
            pc.and_(pc.equal(rows.column("augmentation"), ""), pc.equal(rows.column("task"), measured))
        )
        if not len(originals):
            continue
        notes += int(pc.sum(originals.column("n_notes")).as_py())
        base_tokens += int(pc.sum(originals.column("n_base_tokens")).as_py())
        if measured == "continuation":
            # every chunk adds the header, the last chunk of a piece EOS: count music tokens only
            pieces = int(pc.count_distinct(originals.column("source")).as_py())
            tokens += int(pc.sum(originals.column("length")).as_py()) - continuation_overhead(len(originals), pieces)
        else:
            full_id, eos_id = ids_after
            for batch in ds.select_columns(["input_ids", "augmentation", "task"]).iter(batch_size=1000):
                for ids, aug, task in zip(batch["input_ids"], batch["augmentation"], batch["task"]):
                    if aug == "" and task == measured:
                        music = full_section(ids, full_id)  # the melody section repeats its notes
                        tokens += len(music) - (music[-1:] == [eos_id])
    reasons = Counter(skipped.values())
    return {
        "tasks": list(tasks),
        "files": {"seen": seen, "kept": kept, "skipped": len(skipped)},
        "skipped_by_reason": dict(reasons.most_common()),
        "skipped_files": dict(sorted(skipped.items())),
        "splits": per_split,
        "composers": composer_json,
        "vocabulary": {"base": base_vocab, "with_bpe": vocab},
        "tokens_per_note": {
            "before_bpe": round(base_tokens / notes, 4) if notes else None,
            "after_bpe": round(tokens / notes, 4) if notes else None,
        },
    }


def summary(report: dict) -> str:
    splits = report["splits"]
    lines = [
        f"files: {report['files']['seen']} seen, {report['files']['kept']} kept, {report['files']['skipped']} skipped"
        + (
            f" ({', '.join(f'{n} {r}' for r, n in list(report['skipped_by_reason'].items())[:5])}{', …' if len(report['skipped_by_reason']) > 5 else ''})"
            if report["skipped_by_reason"]
            else ""
        )
        + "".join(f", {report['files'][k]} {k}" for k in ("duplicates", "cut", "flagged") if report["files"].get(k)),
        "pieces / chunks / tokens: "
        + ", ".join(f"{s} {v['pieces']} / {v['chunks']} / {v['tokens']}" for s, v in splits.items()),
        "composers: " + ", ".join(f"{r['composer']} ({r['pieces']})" for r in report["composers"]["composers"]),
        f"vocabulary: {report['vocabulary']['base']} base → {report['vocabulary']['with_bpe']}; tokens per note {report['tokens_per_note']['before_bpe']} → {report['tokens_per_note']['after_bpe']}",
    ]
    if report.get("tasks", ["continuation"]) != ["continuation"]:
        lines.append(
            "chunks per task: "
            + ", ".join(f"{s} " + " + ".join(f"{n} {t}" for t, n in v["tasks"].items()) for s, v in splits.items())
        )
    return "\n".join(lines)
