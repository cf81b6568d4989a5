"""The whole data step: find and check MIDI files, label composers, train the tokenizer, write the dataset."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from midilm.corpus import music21_corpus_files
from midilm.dataset import SPLITS, TASKS, assign_splits, build_dataset, check_files
from midilm.outputs import replace_dir, staging_dir
from midilm.sources import InputError, SourceFile, find_midi_files, read_metadata, relabel
from midilm.tokenizer import FULL_TOKEN, OTHER, build_tokenizer, save_tokenizer

REPORT_FILE = "prepare_report.json"
CONFIG_FILE = "prepare_config.json"


@dataclass
class PrepareArguments:
    midi_dir: str | None = field(default=None, metadata={"help": "Folder of MIDI files, one sub-folder per composer. Without it (and without --metadata) the scores bundled in music21 are used."})
    metadata: str | None = field(default=None, metadata={"help": "CSV or JSONL with columns path,composer (paths relative to --midi_dir); overrides folder labels."})
    composers: str | None = field(default=None, metadata={"help": "Comma-separated composers to keep, e.g. bach,mozart (music21 corpus folder names or your labels)."})
    max_files_per_composer: int | None = field(default=None, metadata={"help": "Keep at most this many files per composer (quick runs)."})
    min_pieces_per_composer: int = field(default=10, metadata={"help": "Composers with fewer valid pieces are folded into OTHER."})
    vocab_size: int = field(default=1000, metadata={"help": "BPE vocabulary size; 0 = no BPE (base REMI vocabulary)."})
    max_seq_len: int = field(default=1024, metadata={"help": "Longest chunk in tokens, BOS/COMPOSER/EOS included; pieces are cut at bar lines."})
    validation_ratio: float = field(default=0.1, metadata={"help": "Share of pieces in the validation split."})
    test_ratio: float = field(default=0.1, metadata={"help": "Share of pieces in the test split."})
    augment: bool = field(default=False, metadata={"help": "Add transposed copies (with velocity and tempo offsets) of the training pieces."})
    augment_pitch_offsets: list[int] = field(default_factory=lambda: [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5], metadata={"help": "Semitone offsets, one augmented copy each (skipped where a note would leave the pitch range)."})
    augment_velocity_offsets: list[int] = field(default_factory=lambda: [-8, 0, 8], metadata={"help": "Velocity offsets drawn from for each copy."})
    augment_tempo_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1], metadata={"help": "Tempo factors drawn from for each copy."})
    tasks: str = field(default="continuation", metadata={"help": "Comma-separated tasks to build rows for: continuation (the music alone) and/or accompaniment (a melody, then the full piece for the same bars)."})
    output_dir: str = field(default="data", metadata={"help": "Where the DatasetDict is written (save_to_disk)."})
    tokenizer_dir: str = field(default="tokenizer", metadata={"help": "Where the tokenizer and composers.json are written."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output or tokenizer folder (only once the new one is complete)."})
    num_proc: int = field(default=os.cpu_count() or 1, metadata={"help": "Worker processes for parsing and tokenizing."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where music21 scores converted to MIDI are cached (default ~/.cache/midilm)."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo id to push the dataset, its card and the tokenizer to."})

    def __post_init__(self):
        if not 0 <= self.validation_ratio < 1 or not 0 <= self.test_ratio < 1 or self.validation_ratio + self.test_ratio >= 1:
            raise InputError("--validation_ratio and --test_ratio must be in [0, 1) and leave pieces for training")
        if self.max_seq_len < 16:
            raise InputError("--max_seq_len must be at least 16 tokens")
        if self.vocab_size < 0:
            raise InputError("--vocab_size must be 0 (no BPE) or a vocabulary size")
        tasks = self.task_list()
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise InputError(f"--tasks {self.tasks!r}: choose one or more of {', '.join(TASKS)}, comma-separated")

    def task_list(self) -> tuple[str, ...]:
        names = self.tasks if isinstance(self.tasks, (list, tuple)) else str(self.tasks).split(",")
        return tuple(dict.fromkeys(t.strip() for t in names if t.strip()))


def collect_files(args: PrepareArguments) -> tuple[list[SourceFile], dict[str, str]]:
    """The labelled files to use, and those already known to be unusable (source → reason)."""
    wanted = [c.strip() for c in args.composers.split(",") if c.strip()] if args.composers else None
    if args.midi_dir is None and args.metadata is None:
        return music21_corpus_files(wanted, args.max_files_per_composer, args.num_proc, Path(args.cache_dir) if args.cache_dir else None)
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


def prepare(args: PrepareArguments, tokenizer_settings: dict) -> dict:
    output_dir, tokenizer_dir = Path(args.output_dir), Path(args.tokenizer_dir)
    for flag, path in (("--output_dir", output_dir), ("--tokenizer_dir", tokenizer_dir)):
        if path.exists() and not args.overwrite:
            raise InputError(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another folder")

    # Find and check files
    files, skipped = collect_files(args)
    seen = len(files) + len(skipped)
    checks = check_files([f.path for f in files], args.num_proc) if files else []
    valid = []
    for file, (reason, _notes) in zip(files, checks):
        if reason:
            skipped[file.source] = reason
        else:
            valid.append(file)
    if not valid:
        raise InputError(f"no usable MIDI files ({len(files)} found, {len(skipped)} skipped); check --midi_dir / --metadata / --composers")

    # Composer vocabulary and splits
    counts = Counter(f.composer for f in valid)
    composers, folded = composer_vocabulary(counts, args.min_pieces_per_composer)
    splits = assign_splits([f.source for f in valid], args.validation_ratio, args.test_ratio)
    files_by_split = {s: [] for s in SPLITS}
    for f in valid:
        files_by_split[splits[f.source]].append({"path": str(f.path), "source": f.source, "label": composers.index(folded[f.composer])})

    with staging_dir(tokenizer_dir) as tok_tmp, staging_dir(output_dir) as data_tmp:
        # Tokenizer: REMI, then BPE learnt on the training pieces only
        tokenizer, composer_map = build_tokenizer(tokenizer_settings, composers)
        composer_map.pieces = [sum(counts[c] for c, f in folded.items() if f == name) for name in composers]
        base_vocab = len(tokenizer)
        if args.vocab_size:
            if args.vocab_size <= base_vocab:
                raise InputError(f"--vocab_size {args.vocab_size} must exceed the base REMI vocabulary ({base_vocab}), or be 0 for no BPE")
            tokenizer.train(vocab_size=args.vocab_size, model="BPE", files_paths=[Path(f["path"]) for f in files_by_split["train"]])
        save_tokenizer(tokenizer, composer_map, tok_tmp)

        # Dataset
        augment = {k: getattr(args, k) for k in ("augment_pitch_offsets", "augment_velocity_offsets", "augment_tempo_factors")} if args.augment else None
        dataset = build_dataset(files_by_split, tok_tmp, composers, args.max_seq_len, augment, args.num_proc, data_tmp / ".cache", args.task_list())
        dataset.save_to_disk(str(data_tmp), num_proc=None)
        shutil.rmtree(data_tmp / ".cache", ignore_errors=True)

        report = make_report(
            seen, len(valid), skipped, dataset, composers, composer_map.to_json(), base_vocab, len(tokenizer), args.task_list(),
            (tokenizer[FULL_TOKEN], tokenizer["EOS_None"]),
        )
        (data_tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        resolved = {"prepare": asdict(args), "tokenizer": tokenizer_settings}
        (data_tmp / CONFIG_FILE).write_text(json.dumps(resolved, indent=2) + "\n")
        from midilm.hub import write_dataset_card

        write_dataset_card(data_tmp, report, resolved)

        replace_dir(tok_tmp, tokenizer_dir)
        replace_dir(data_tmp, output_dir)

    if args.push_to_hub:
        from midilm.hub import push_dataset

        push_dataset(output_dir, tokenizer_dir, args.push_to_hub)
    return report


def make_report(
    seen: int, kept: int, skipped: dict[str, str], dataset, composers: list[str], composer_json: dict, base_vocab: int, vocab: int,
    tasks: tuple[str, ...] = ("continuation",), ids_after: tuple[int, int] | None = None,
) -> dict:
    """The dataset's figures; `ids_after` = (FULL, EOS) token ids, needed when there are accompaniment rows only."""
    per_split = {}
    notes = base_tokens = tokens = 0
    # Tokens per note from one task's rows, so no note counts twice: continuation's, else the full
    # sections of accompaniment rows (their melody sections repeat notes of the piece).
    measured = "continuation" if "continuation" in tasks else "accompaniment"
    for split in SPLITS:
        ds = dataset[split]
        lengths = pc.list_value_length(ds.data.column("input_ids")).to_numpy() if len(ds) else []
        rows = ds.select_columns(["composer", "source", "augmentation", "n_notes", "n_base_tokens", "task"]).to_pandas()
        per_composer = {}
        for label, name in enumerate(composers):
            mine = rows[rows.composer == label]
            per_composer[name] = {
                "pieces": int(mine.source.nunique()),
                "chunks": len(mine),
                "tokens": int(sum(lengths[i] for i in mine.index)),
            }
        per_split[split] = {
            "pieces": int(rows.source.nunique()), "chunks": len(ds), "tokens": int(sum(lengths)), "composers": per_composer,
            "tasks": {task: int((rows.task == task).sum()) for task in tasks},
        }
        originals = (rows.augmentation == "") & (rows.task == measured)
        notes += int(rows.n_notes[originals].sum())
        base_tokens += int(rows.n_base_tokens[originals].sum())
        if measured == "continuation":
            # every chunk adds BOS and COMPOSER, the last chunk of a piece EOS: count music tokens only
            tokens += int(sum(lengths[i] for i in rows.index[originals]) - 2 * originals.sum() - rows[originals].source.nunique())
        else:
            full_id, eos_id = ids_after
            for ids in ds.select(rows.index[originals].tolist())["input_ids"]:
                music = ids[ids.index(full_id) + 1 :]  # the full section; the melody section repeats its notes
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
        + (f" ({', '.join(f'{n} {r}' for r, n in report['skipped_by_reason'].items())})" if report["skipped_by_reason"] else ""),
        "pieces / chunks / tokens: " + ", ".join(f"{s} {v['pieces']} / {v['chunks']} / {v['tokens']}" for s, v in splits.items()),
        "composers: " + ", ".join(f"{r['composer']} ({r['pieces']})" for r in report["composers"]["composers"]),
        f"vocabulary: {report['vocabulary']['base']} base → {report['vocabulary']['with_bpe']}; tokens per note {report['tokens_per_note']['before_bpe']} → {report['tokens_per_note']['after_bpe']}",
    ]
    if report.get("tasks", ["continuation"]) != ["continuation"]:
        lines.append("chunks per task: " + ", ".join(f"{s} " + " + ".join(f"{n} {t}" for t, n in v["tasks"].items()) for s, v in splits.items()))
    return "\n".join(lines)
