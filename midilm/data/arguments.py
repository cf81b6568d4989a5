"""prepare_dataset.py's arguments (PrepareArguments): sources, composers, splits, tasks, tokenizer training,
the Hub."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from midilm.core.errors import InputError
from midilm.core.rows import TASKS

BPE_MAX_FILES = 2000

BPE_MAX_FILES_WHY = "BPE cost ~6 ms and ~35 MB per 1,000 files here, and tokens per note stopped falling by 250 files"


@dataclass
class PrepareArguments:
    midi_dir: str | None = field(
        default=None,
        metadata={
            "help": (
                "Folder of MIDI files, one sub-folder per composer. Without it (and without --metadata) the "
                "scores bundled in music21 are used."
            )
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
            "help": (
                "Encode the files with this trained midilm model's tokenizer (a model folder or a Hub repo id), "
                "to fine-tune it with train.py --init_from: its BPE vocabulary and settings are kept byte for "
                "byte (--vocab_size and config.json's tokenizer section do not apply), composers it knows keep "
                "their ids, new ones get tokens after its last id."
            )
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
            "help": (
                f"BPE learns from at most this many training pieces, drawn with --seed (default {BPE_MAX_FILES}: "
                f"{BPE_MAX_FILES_WHY})."
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the BPE training sample."})
    max_silence_beats: float = field(
        default=64.0,
        metadata={
            "help": (
                "Longest silence (quarter notes, every track silent) a piece may hold: a few stray notes after a "
                "longer one are cut, otherwise the file is skipped (each reported)."
            )
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
            "help": "Comma-separated tasks to build rows for: continuation (the music alone) and/or accompaniment (a "
            "melody, then the full piece for the same bars)."
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
