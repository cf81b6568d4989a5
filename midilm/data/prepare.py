"""The whole data step: find and check MIDI files, label composers, train the tokenizer, write the dataset."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from tqdm.auto import tqdm

from midilm.core.errors import InputError
from midilm.core.outputs import replace_dir, staging_dir
from midilm.core.tokenizer import (
    FULL_TOKEN,
    OTHER,
    BarWordsIterator,
    build_tokenizer,
    infill_token_ids,
    save_tokenizer,
)
from midilm.core.tokenizer import tokenizer_settings as resolve_tokenizer_settings
from midilm.data.arguments import PrepareArguments
from midilm.data.corpus import music21_corpus_files
from midilm.data.dataset import SPLITS, assign_splits, build_dataset
from midilm.data.report import add_file_lists, make_report
from midilm.data.scan import Bounds, Spill, read_spill, scan_files, scan_vocabulary
from midilm.data.sources import SourceFile, find_midi_files, read_metadata, relabel
from midilm.training.finetune import composer_vocabulary as base_composer_vocabulary
from midilm.training.finetune import extend_tokenizer, resolve_base, tokenizer_settings_of, write_base_file
from midilm.training.hub import push_dataset, write_dataset_card

REPORT_FILE = "prepare_report.json"

CONFIG_FILE = "prepare_config.json"


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
    """Scan every file once (midilm.data.scan): the kept pieces, in file order and without duplicates;
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
                f"--vocab_size {args.vocab_size} must exceed the base REMI vocabulary ({base_vocab}), or be 0 for no "
                "BPE"
            )
        sequences = lambda: (remap[read_spill(spill, p.offset, p.length)] for p in sample)  # noqa: E731
        tokenizer.train(
            vocab_size=args.vocab_size, model="BPE", iterator=BarWordsIterator(tokenizer, sequences, len(sample))
        )
    return tokenizer, composer_map, base_vocab, scan_vocab, sample


def extend_base_tokenizer(
    base, composers: list[str], pieces_per_composer: list[int], settings: dict, folders: tuple[Path, ...]
):
    """The base model's tokenizer with the new composers appended (midilm.training.finetune.extend_tokenizer),
    its base recorded in each of `folders`. Returns what `train_tokenizer` returns (no BPE sample)."""
    tokenizer, base_map = base.tokenizer, base.composer_map
    scan_vocab = scan_vocabulary(settings)
    if missing := [t for t in scan_vocab if t not in tokenizer.vocab]:
        raise InputError(
            f"--base_model {base.source}: its tokenizer lacks tokens the scan encodes ({', '.join(missing[:5])}); "
            "was it made by prepare_dataset.py?"
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


def prepare(args: PrepareArguments, tokenizer_overrides: dict | None = None) -> dict:
    """Scan, tokenize and split the files; write the tokenizer and the dataset (with the resolved
    configuration beside it) whole, or nothing. `tokenizer_overrides`: config.json's `tokenizer` section."""
    tokenizer_settings = resolve_tokenizer_settings(tokenizer_overrides)
    output_dir, tokenizer_dir = Path(args.output_dir), Path(args.tokenizer_dir)
    check_outputs_free(args, output_dir, tokenizer_dir)
    base = load_base(args)
    if base is not None:
        tokenizer_settings = tokenizer_settings_of(base.tokenizer)
    files, skipped = collect_files(args)
    seen = len(files) + len(skipped)
    timings = {}
    with staging_dir(tokenizer_dir) as tok_tmp, staging_dir(output_dir) as data_tmp:
        work = data_tmp / ".cache"
        work.mkdir()
        # Read every file once: checks, bounds, base tokens, content hash
        pieces, duplicates, cut = scan_pieces(files, skipped, args, tokenizer_settings, work, timings)
        flagged, normal = flag_outliers(pieces)

        # Composer vocabulary (the base's first, when building on one), and splits by content, so a
        # duplicate under another name can't cross them
        counts = Counter(p.file.composer for p in pieces)
        composers, folded = choose_composers(counts, base, args)
        by_split = split_pieces(pieces, args)

        # Tokenizer: REMI, then BPE learnt on a sample of the training pieces; or the base's, extended
        clock = time.perf_counter()
        pieces_per_composer = [sum(counts[c] for c, f in folded.items() if f == name) for name in composers]
        tokenizer, composer_map, base_vocab, scan_vocab, sample = make_tokenizer(
            tokenizer_settings, composers, pieces_per_composer, by_split["train"], args, base, work, tok_tmp, data_tmp
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
        add_run_record(report, args, base, composers, len(sample), timings)
        write_records(data_tmp, report, args, tokenizer_settings, base)
        del dataset

        replace_dir(tok_tmp, tokenizer_dir)
        replace_dir(data_tmp, output_dir)

    if args.push_to_hub:
        push_dataset(output_dir, tokenizer_dir, args.push_to_hub)
    return report


def check_outputs_free(args: PrepareArguments, output_dir: Path, tokenizer_dir: Path) -> None:
    """Refuses an output folder that already exists unless --overwrite."""
    for flag, path in (("--output_dir", output_dir), ("--tokenizer_dir", tokenizer_dir)):
        if path.exists() and not args.overwrite:
            raise InputError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another folder")


def load_base(args: PrepareArguments):
    """The --base_model to build on (None without one), refused when it cannot learn the tasks asked for."""
    base = resolve_base(args.base_model, "--base_model") if args.base_model else None
    if base is not None and "infill" in args.task_list() and infill_token_ids(base.tokenizer) is None:
        raise InputError(
            f"--base_model {base.source}: its tokenizer was made before the infill task (no GAP/FILL markers), "
            "so it cannot learn infilling; leave infill out of --tasks"
        )
    return base


def scan_pieces(
    files: list[SourceFile],
    skipped: dict[str, str],
    args: PrepareArguments,
    tokenizer_settings: dict,
    work: Path,
    timings: dict,
) -> tuple[list[Piece], dict, dict]:
    """The usable pieces, the duplicates and the cut files; adds the unusable ones to `skipped` and the time
    taken to `timings`. No usable piece is an InputError."""
    clock = time.perf_counter()
    pieces, scan_skipped, duplicates, cut = (
        scan_corpus(files, args, tokenizer_settings, work / "scan.bin") if files else ([], {}, {}, {})
    )
    skipped.update(scan_skipped)
    timings["scan"] = time.perf_counter() - clock
    if not pieces:
        raise InputError(
            f"no usable MIDI files ({len(files)} found, {len(skipped)} skipped); check --midi_dir / --metadata / "
            "--composers"
        )
    return pieces, duplicates, cut


def choose_composers(counts: Counter[str], base, args: PrepareArguments) -> tuple[list[str], dict[str, str]]:
    """The composer vocabulary (the base's composers first, when building on one) and each composer's name
    in it."""
    if base is None:
        return composer_vocabulary(counts, args.min_pieces_per_composer)
    return base_composer_vocabulary(base.composer_map, counts, args.min_pieces_per_composer)


def split_pieces(pieces: list[Piece], args: PrepareArguments) -> dict[str, list[Piece]]:
    """The pieces by split, assigned by content."""
    splits = assign_splits([p.digest for p in pieces], args.validation_ratio, args.test_ratio)
    by_split: dict[str, list[Piece]] = {s: [] for s in SPLITS}
    for piece in pieces:
        by_split[splits[piece.digest]].append(piece)
    return by_split


def make_tokenizer(
    tokenizer_settings: dict,
    composers: list[str],
    pieces_per_composer: list[int],
    train_pieces: list[Piece],
    args: PrepareArguments,
    base,
    work: Path,
    tok_tmp: Path,
    data_tmp: Path,
):
    """A new tokenizer trained on the training pieces, or the base's extended with the new composers."""
    if base is None:
        return train_tokenizer(
            tokenizer_settings, composers, pieces_per_composer, train_pieces, args, work / "scan.bin"
        )
    return extend_base_tokenizer(
        base,
        composers,
        pieces_per_composer,
        tokenizer_settings,
        (tok_tmp, data_tmp),
    )


def add_run_record(
    report: dict, args: PrepareArguments, base, composers: list[str], bpe_files: int, timings: dict
) -> None:
    """Adds how the tokenizer was made (its BPE sample, or the base it extends) and the time each stage took."""
    report["bpe"] = {"training_files": bpe_files, "max_files": args.bpe_max_files, "seed": args.seed}
    if base is not None:
        report["bpe"] = {"from_base_model": base.source}
        report["base_model"] = {**base.record(), "new_composers": composers[len(base.composer_map.names) :]}
    report["seconds"] = {k: round(v, 2) for k, v in timings.items()}


def write_records(data_tmp: Path, report: dict, args: PrepareArguments, tokenizer_settings: dict, base) -> None:
    """The report, the resolved configuration and the dataset card, beside the dataset."""
    (data_tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    resolved = {
        "prepare": asdict(args),
        "tokenizer": tokenizer_settings,
        **({"base_model": base.record()} if base else {}),
    }
    (data_tmp / CONFIG_FILE).write_text(json.dumps(resolved, indent=2, ensure_ascii=False) + "\n")
    write_dataset_card(data_tmp, report, resolved)
